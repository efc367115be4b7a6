"""Cases of the bad-inputs sweep for failures of the operating system and the ledger's database (issue 24): a
full disk (ENOSPC) while a model file is written and at the ledger's commit, a read-only model directory, a
missing database driver, a refused connection, damaged ledgers and a damaged Optuna study.

A test cannot fill a disk or make a folder read-only for root (root ignores ``chmod``), so these cases run the
real CLI command under an injected fault (`inject`), the way the operating system would fail it:

* ``disk_full_model``: every safetensors write stops half-way with ``OSError(ENOSPC)`` (the half-written file is
  left for the caller to clean up, as a real full disk leaves it);
* ``disk_full_commit``: every database COMMIT fails with SQLite's own ``database or disk is full``
  (``sqlite3.OperationalError``, which SQLAlchemy wraps as it wraps the real one);
* ``read_only:DIR``: DIR is read-only. Not root: ``chmod -R a-w`` for real. Root: a read-only mount is emulated
  (``os.access(W_OK)`` is false, every write, create, rename or removal under DIR raises ``OSError(EROFS)``, and
  SQLite opens the files under DIR read-only);
* ``no_module:NAME``: the module NAME is not installed (``import NAME`` raises ``ModuleNotFoundError``).

Each failing case checks the previous state, not just the message: the guarded directories' files byte for
byte (``Case.guard``) and their ledgers' rows, statuses and ``verify`` (``Case.ledgers``). The sweep runs a
fault in process (``with inject(fault): main(argv)``) or, with ``--subprocess``, in the child (`CHILD`).
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The child's program under ``--subprocess``: argv[1] is this file, argv[2] the fault, the rest the CLI's argv.
CHILD = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('bad_inputs_faults', sys.argv[1])\n"
    "faults = importlib.util.module_from_spec(spec); spec.loader.exec_module(faults)\n"
    "from unlearnkit.cli import main\n"
    "with faults.inject(sys.argv[2]):\n"
    "    code = main(sys.argv[3:])\n"
    "sys.exit(code)\n"
)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, old)


def _enospc(path: Any) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


@contextlib.contextmanager
def _disk_full_model(_: str) -> Iterator[None]:
    import safetensors.torch as st

    real = st.save_file

    def save_file(tensors: Any, filename: Any, metadata: Any = None) -> None:
        real(tensors, filename, metadata=metadata)
        with open(filename, "r+b") as fh:  # the disk filled up half-way through the file
            fh.truncate(os.path.getsize(filename) // 2)
        raise _enospc(filename)

    with _patched(st, "save_file", save_file):
        yield


@contextlib.contextmanager
def _disk_full_commit(_: str) -> Iterator[None]:
    import sqlite3

    from sqlalchemy.engine.default import DefaultDialect

    def do_commit(self: Any, dbapi_connection: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with _patched(DefaultDialect, "do_commit", do_commit):
        yield


def _under(path: Any, root: Path) -> bool:
    if isinstance(path, int):
        return False
    try:
        return Path(os.fsdecode(path)).resolve().is_relative_to(root)
    except (TypeError, ValueError, OSError):
        return False


@contextlib.contextmanager
def _read_only(arg: str) -> Iterator[None]:
    root = Path(arg).resolve()
    if os.geteuid() != 0:  # the real thing: chmod is obeyed
        modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
        for p, m in modes.items():
            p.chmod(m & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            yield
        finally:
            for p, m in modes.items():
                p.chmod(m)
        return

    def erofs(path: Any) -> OSError:
        return OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))

    real_open, real_os_open, real_access = builtins.open, os.open, os.access
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def open_(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if any(c in mode for c in "wax+") and _under(file, root):
            raise erofs(file)
        return real_open(file, mode, *a, **kw)

    def os_open(path: Any, flags: int, *a: Any, **kw: Any) -> int:
        if flags & writes and _under(path, root):
            raise erofs(path)
        return real_os_open(path, flags, *a, **kw)

    def access(path: Any, mode: int, *a: Any, **kw: Any) -> bool:
        return False if mode & os.W_OK and _under(path, root) else real_access(path, mode, *a, **kw)

    def refuse(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*paths: Any, **kw: Any) -> Any:
            hit = [p for p in paths[:2] if _under(p, root)]
            if hit:
                raise erofs(hit[0])
            return real(*paths, **kw)

        return call

    import sqlite3
    import sqlite3.dbapi2

    import safetensors.torch as st

    real_connect, real_save = sqlite3.connect, st.save_file

    def connect(database: Any = None, *a: Any, **kw: Any) -> Any:
        database = kw.pop("database", database)
        if _under(database, root):  # SQLite on a read-only mount: reads work, writes fail
            kw["uri"] = True
            database = f"file:{Path(os.fsdecode(database)).resolve()}?mode=ro"
        return real_connect(database, *a, **kw)

    def save_file(tensors: Any, filename: Any, metadata: Any = None) -> None:
        if _under(filename, root):
            raise erofs(filename)
        real_save(tensors, filename, metadata=metadata)

    with contextlib.ExitStack() as stack:
        for owner, name, value in [
            (builtins, "open", open_),
            (io, "open", open_),
            (os, "open", os_open),
            (os, "access", access),
            (sqlite3, "connect", connect),
            (sqlite3.dbapi2, "connect", connect),  # the module SQLAlchemy's driver calls
            (st, "save_file", save_file),
        ] + [(os, n, refuse(getattr(os, n))) for n in ("replace", "rename", "unlink", "remove", "mkdir", "rmdir")]:
            stack.enter_context(_patched(owner, name, value))
        yield


@contextlib.contextmanager
def _no_module(name: str) -> Iterator[None]:
    saved = {k: v for k, v in sys.modules.items() if k == name or k.startswith(name + ".")}
    for k in saved:
        del sys.modules[k]
    sys.modules[name] = None  # type: ignore[assignment]  # `import name` raises ModuleNotFoundError
    try:
        yield
    finally:
        del sys.modules[name]
        sys.modules.update(saved)


FAULTS: dict[str, Callable[[str], contextlib.AbstractContextManager[None]]] = {
    "disk_full_model": _disk_full_model,
    "disk_full_commit": _disk_full_commit,
    "read_only": _read_only,
    "no_module": _no_module,
}


@contextlib.contextmanager
def inject(fault: str) -> Iterator[None]:
    """Run the block under ``fault`` (``KIND`` or ``KIND:ARG``; ``""`` for none)."""
    if not fault:
        yield
        return
    kind, _, arg = fault.partition(":")
    with FAULTS[kind](arg):
        yield
