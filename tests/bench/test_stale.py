"""benchmarks/stale.py classifies records by the commit they were measured on against the code they use."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


@pytest.fixture(scope="module")
def stale():  # type: ignore[no-untyped-def]
    if not _git("rev-parse", "HEAD"):
        pytest.skip("not a git checkout")
    spec = importlib.util.spec_from_file_location("bench_stale", ROOT / "benchmarks" / "stale.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_code_paths_follow_the_class_hierarchy_and_the_preset(stale) -> None:  # type: ignore[no-untyped-def]
    paths = stale.code_paths("salun")
    assert "src/unlearnkit/methods/salun.py" in paths
    assert "src/unlearnkit/methods/random_label.py" in paths  # SalUn subclasses RL
    assert "src/unlearnkit/methods/presets/salun.toml" in paths
    assert "src/unlearnkit/evaluation/metrics.py" in paths
    assert "src/unlearnkit/methods/finetune.py" not in paths
    assert "src/unlearnkit/sisa.py" in stale.code_paths("sisa")  # the engine outside methods/


def test_rows_are_stale_fresh_or_without_a_commit(stale) -> None:  # type: ignore[no-untyped-def]
    first = _git("rev-list", "--max-parents=0", "HEAD").splitlines()[0]
    head = _git("rev-parse", "HEAD")
    assert stale.classify({"package": {"git_sha": first}, "method": {"name": "ft"}})[0] == "stale"
    assert stale.classify({"package": {"git_sha": head}, "method": {"name": "ft"}})[0] == "fresh"
    assert stale.classify({"method": {"name": "ft"}})[0] == "no commit recorded"
    assert stale.classify({"package": {"git_sha": "0" * 40}, "method": {"name": "ft"}})[0] == "unknown commit"
