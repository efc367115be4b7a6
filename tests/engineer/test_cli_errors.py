"""Issue 24: no traceback reaches a CLI user. Errors the library does not raise on purpose (the database, the
checkpoint format, the operating system, memory) end in one line and a non-zero exit; ``--debug`` shows the
traceback."""

from __future__ import annotations

import errno

import pytest


def _raising(exc: BaseException):
    def run(args):
        raise exc

    return run


def _sqlalchemy_error() -> BaseException:
    sa = pytest.importorskip("sqlalchemy")
    return sa.exc.OperationalError("COMMIT", {}, Exception("database or disk is full"))


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda: OSError(errno.ENOSPC, "No space left on device", "ledger.db"), "no space left"),
        (lambda: PermissionError(errno.EACCES, "Permission denied", "/models/m/.apply.lock"), "permission denied"),
        (lambda: OSError(errno.EROFS, "Read-only file system", "ledger.db"), "read-only"),
        (lambda: MemoryError(), "out of memory"),
        (_sqlalchemy_error, "database or disk is full"),
        (lambda: RuntimeError("element 0 of tensors does not require grad"), "--debug"),
    ],
)
def test_unexpected_errors_are_one_line_with_a_non_zero_exit(cli, monkeypatch, make, expect) -> None:
    from unlearnkit import cli as cli_pkg

    verb = cli_pkg.VERBS["list"]
    monkeypatch.setitem(cli_pkg.VERBS, "list", type(verb)(verb.add, _raising(make())))
    r = cli("list", "methods")
    assert r.code == 1 and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert r.err.startswith("unlearnkit list: error:") and expect in r.err, r.err
    r = cli("--debug", "list", "methods")
    assert r.code == 99 and "Traceback" in r.err  # the traceback, for whoever asked


def test_safetensors_errors_are_named(cli, tmp_path) -> None:
    from unlearnkit.cli._errors import describe

    safetensors = pytest.importorskip("safetensors")
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    with pytest.raises(Exception) as info, safetensors.safe_open(str(bad), framework="pt") as fh:  # noqa: PT011
        fh.keys()
    assert "checkpoint" in describe(info.value), describe(info.value)
