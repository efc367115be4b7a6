"""Fixtures of the engineer's-path tests (issue 24): a registered digits model directory, a CLI runner."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(*argv: str) -> CliResult:
    """``unlearnkit ARGV`` in this process: exit code, stdout, stderr (a traceback counts as exit 99)."""
    from unlearnkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 99
    return CliResult(int(code), out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def cli():
    """`run_cli`, for test modules (conftest is not importable under --import-mode=importlib)."""
    return run_cli


@pytest.fixture(scope="session")
def digits_untrained_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A digits small_cnn checkpoint with untrained weights (cases that fail or are checked before compute)."""
    import torch

    from unlearnkit.models import create_model, save_model

    torch.manual_seed(0)
    return save_model(create_model("small_cnn", 10, 1, 8), tmp_path_factory.mktemp("ck") / "digits.safetensors")


@pytest.fixture
def digits_dir(tmp_path: Path, digits_untrained_ckpt: Path) -> Path:
    """A model directory registered with digits through the CLI (a plain model, no request yet)."""
    import shutil

    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(digits_untrained_ckpt, d / "model.safetensors")
    r = run_cli("request", "init", str(d), "--dataset", "digits")
    assert r.code == 0, r.err
    return d
