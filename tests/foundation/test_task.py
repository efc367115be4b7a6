"""The job layer's request value: a forget spec is parsed once from the CLI to the record, an ``indices:FILE`` is
read once, the method's presets are resolved once, and a deletion request's spec or index list is parsed once
from ``request add`` through ``apply``."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from unlearnkit.cli import main
from unlearnkit.data import splits


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts parses of spec text (not of an already parsed `ForgetSpec`) and reads of indices files.

    ``parse_forget_spec`` is replaced in every loaded module that imported it by name, so no caller escapes.
    """
    calls: Counter[str] = Counter()
    real_parse, real_read = splits.parse_forget_spec, splits._read_indices_file

    def parse(spec):  # type: ignore[no-untyped-def]
        if isinstance(spec, str):  # a user's text (None, the "no forget set" of an original, is not one)
            calls[f"parse {spec}"] += 1
        return real_parse(spec)

    def read(path):  # type: ignore[no-untyped-def]
        calls[f"read {Path(path).name}"] += 1
        return real_read(path)

    for module in list(sys.modules.values()):
        if getattr(module, "parse_forget_spec", None) is real_parse:
            monkeypatch.setattr(module, "parse_forget_spec", parse)
    monkeypatch.setattr(splits, "_read_indices_file", read)
    return calls


def test_run_parses_the_spec_once_and_reads_its_file_once(
    tmp_path: Path, parses: Counter[str], capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import unlearnkit.methods as methods

    real_preset = methods.preset_config

    def preset(*args, **kwargs):  # type: ignore[no-untyped-def]
        parses["preset resolution"] += 1
        return real_preset(*args, **kwargs)

    monkeypatch.setattr(methods, "preset_config", preset)  # create_method reads it from the module too
    forget = tmp_path / "forget.json"
    forget.write_text(json.dumps(list(range(0, 40, 2))))
    out = tmp_path / "r"
    argv = ["run", "--dataset", "synthetic", "--model", "small_cnn", "--device", "cpu", "--forget", f"indices:{forget}"]
    argv += ["--method", "ft", "--set", "epochs=1", "--no-noise-floor", "--audits", "none", "--out", str(out)]
    assert main(argv) == 0, capsys.readouterr().err
    assert parses == Counter({f"parse indices:{forget}": 1, "read forget.json": 1, "preset resolution": 1})
    assert json.loads((out / "split.json").read_text())["forget"] == list(range(0, 40, 2))


def test_request_add_then_apply_parses_each_request_once(tmp_path: Path, parses: Counter[str], capsys) -> None:
    pytest.importorskip("sqlalchemy")
    from unlearnkit.ledger import ModelDirectory
    from unlearnkit.testing import tiny_model

    d = ModelDirectory.create(tmp_path / "m", tiny_model(), dataset="synthetic")
    idx = tmp_path / "idx.txt"
    idx.write_text("5\n6\n7\n")
    assert main(["request", "add", str(d.path), "--subject", "a", "--indices", f"@{idx}"]) == 0
    assert main(["request", "add", str(d.path), "--subject", "b", "--indices", "100-102,110"]) == 0
    assert main(["request", "add", str(d.path), "--subject", "c", "--spec", "class:1"]) == 0
    assert parses == Counter({"read idx.txt": 1, "parse class:1": 1}), parses
    parses.clear()
    assert main(["request", "apply", str(d.path), "--method", "ft", "--set", "epochs=1", "--no-audit"]) == 0
    assert parses == Counter(), "apply builds its split from the recorded indices without parsing any text"
    applied = {r.id: r.indices for r in ModelDirectory(d.path).ledger.requests_list(status="applied")}
    assert applied["req-000001"] == [5, 6, 7] and applied["req-000002"] == [100, 101, 102, 110]
    capsys.readouterr()
