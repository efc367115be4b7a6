"""Cases of the bad-inputs sweep for failures of the operating system and the ledger's database (issue 24): a
full disk (ENOSPC) while a model file is written and at the ledger's commit, a read-only model directory, a
missing database driver, a refused connection, damaged ledgers and a damaged Optuna study.

A test cannot fill a disk or make a folder read-only for root (root ignores ``chmod``), so these cases run the
real CLI command under an injected fault (`inject`), the way the operating system would fail it:

* ``disk_full_model``: every safetensors write stops half-way with ``OSError(ENOSPC)`` (the half-written file is
  left for the caller to clean up, as a real full disk leaves it);
* ``disk_full_commit``: every database COMMIT fails with SQLite's own ``database or disk is full``
  (``sqlite3.OperationalError``, which SQLAlchemy wraps as it wraps the real one);
* ``disk_full_anchor``: writing ``ledger.head`` (after the ledger's commit) fails with ``OSError(ENOSPC)``;
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


@contextlib.contextmanager
def _disk_full_anchor(_: str) -> Iterator[None]:
    real_open = builtins.open

    def open_(file: Any, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if "w" in mode and not isinstance(file, int) and Path(os.fsdecode(file)).name.startswith(".ledger.head."):
            raise _enospc(file)
        return real_open(file, mode, *a, **kw)

    with _patched(builtins, "open", open_), _patched(io, "open", open_):
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
    "disk_full_anchor": _disk_full_anchor,
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


# ------------------------------------------------------------------------------------------------ workspace
def build_os_workspace(ws: Path) -> dict[str, Path]:
    """Digits model directories (registered with a pending request, unregistered, with a text or an empty
    ``ledger.db``) and an Optuna study that finished its trials, then damaged three ways."""
    import sqlite3

    import torch

    from unlearnkit.jobs.checkpoints import save_checkpoint
    from unlearnkit.ledger import ModelDirectory
    from unlearnkit.models import create_model

    torch.manual_seed(1)
    ws.mkdir(parents=True)
    f: dict[str, Path] = {}

    def model_dir(name: str, *, register: bool = True, ledger: bytes | None = None) -> Path:
        d = ws / name
        d.mkdir()
        save_checkpoint(create_model("small_cnn", 10, 1, 8), d / "model.safetensors")
        if register:
            ModelDirectory.create(d, dataset="digits").add("s", indices=[3, 5], request_id=f"{name}-1")
        if ledger is not None:
            (d / "ledger.db").write_bytes(ledger)
        (d / ".apply.lock").touch()
        return d

    f["full"] = model_dir("md_full")  # a full disk: every failure keeps md_full-1 pending, then it applies
    f["ro"] = model_dir("md_ro")  # read-only, with a pending request
    f["ro_new"] = model_dir("md_ro_new", register=False)  # read-only, to register
    f["new"] = model_dir("md_new", register=False)  # to register (and fail)
    f["text"] = model_dir("md_text", register=False, ledger=b"this is not a database\n")
    f["empty"] = model_dir("md_empty", register=False, ledger=b"")
    studies = f["studies"] = ws / "studies"
    studies.mkdir()
    try:
        import optuna
    except ImportError:
        return f
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    good = studies / "finished.db"
    st = optuna.create_study(study_name="mine", storage=f"sqlite:///{good}")
    st.set_user_attr(
        "unlearnkit_identity", {"method": "ft", "dataset": "digits", "model": "small_cnn", "forget": "class:2"}
    )
    st.optimize(lambda t: t.suggest_float("lr", 1e-3, 1e-1), n_trials=8)
    raw = good.read_bytes()
    f["study_dropped"] = studies / "dropped.db"
    f["study_dropped"].write_bytes(raw)
    with contextlib.closing(sqlite3.connect(f["study_dropped"])) as c:
        c.execute("DROP TABLE trial_values")
        c.commit()
    f["study_truncated"] = studies / "truncated.db"
    f["study_truncated"].write_bytes(raw[: len(raw) // 2])
    f["study_garbage"] = studies / "garbage.db"
    mid = len(raw) // 2
    f["study_garbage"].write_bytes(raw[:mid] + b"\x5a" * 8192 + raw[mid + 8192 :])
    good.unlink()
    return f


# ------------------------------------------------------------------------------------------------ cases
def _ledger_checks(d: Path, rid: str, status: str) -> Callable[[], str | None]:
    def check() -> str | None:
        from unlearnkit.ledger import ModelDirectory

        md = ModelDirectory(d)
        got = [r.status for r in md.ledger.requests_list() if r.id == rid]
        v = md.verify()
        if got != [status]:
            return f"request {rid} is {got}, not {status}"
        return None if v.ok else f"verify fails: {v.problems}"

    return check


def os_cases(f: dict[str, Path], out: Path, Case: Any) -> list[Any]:
    full, ro, ro_new, new, text, empty = (str(f[k]) for k in ("full", "ro", "ro_new", "new", "text", "empty"))
    apply = ["--method", "ft", "--set", "epochs=1", "--no-audit", "--device", "cpu", "--allow-partial"]
    pg = "postgresql+psycopg2://u:s3cret@127.0.0.1:1/x"  # port 1: refused at once
    TU = ["tune", "--dataset", "digits", "--model", "small_cnn", "--forget", "class:2", "--grid", "lr=0.1"]
    TU += ["--method", "ft", "--device", "cpu", "--no-progress", "--study-name", "mine", "--storage"]

    def C(name: str, argv: list[str], expect: str = "", *, on: str = "", **kw: Any) -> Any:
        d = Path(on) if on else None
        kw.setdefault("guard", (d,) if d else ())
        if d is not None and (d / "ledger.head").is_file():
            kw.setdefault("ledgers", (d,))
        return Case(name, argv, expect=expect, **kw)

    cases = [
        # ledger.db a text file or empty, for every verb (add is in bad_inputs_engineer)
        C("apply ledger.db is text", ["request", "apply", text, *apply], "SQLite", on=text, exit=2),
        C("verify ledger.db is text", ["request", "verify", text], "SQLite", on=text, exit=2),
        C("list ledger.db is text", ["request", "list", text], "SQLite", on=text, exit=2),
        C("init over a text ledger.db", ["request", "init", text, "--dataset", "digits"], "SQLite", on=text, exit=2),
        C("apply ledger.db empty", ["request", "apply", empty, *apply], "empty", on=empty, exit=2),
        C("verify ledger.db empty", ["request", "verify", empty], "empty", on=empty, exit=2),
        C("list ledger.db empty", ["request", "list", empty], "empty", on=empty, exit=2),
        C("init over an empty ledger.db", ["request", "init", empty, "--dataset", "digits"], "empty", on=empty),
        # a read-only model directory: writes refused before any compute, reads work
        C(
            "add, read-only dir",
            ["request", "add", ro, "--subject", "s", "--indices", "7"],
            "read-only",
            on=ro,
            exit=2,
            fault=f"read_only:{ro}",
        ),
        C(
            "apply, read-only dir",
            ["request", "apply", ro, *apply],
            "read-only",
            on=ro,
            exit=2,
            fault=f"read_only:{ro}",
        ),
        C(
            "init, read-only dir",
            ["request", "init", ro_new, "--dataset", "digits"],
            "read-only",
            on=ro_new,
            exit=2,
            fault=f"read_only:{ro_new}",
        ),
        C(
            "verify a read-only dir",
            ["request", "verify", ro],
            ok=True,
            fault=f"read_only:{ro}",
            check=_ledger_checks(f["ro"], "md_ro-1", "pending"),
        ),
        C(
            "list a read-only dir",
            ["request", "list", ro, "--format", "json"],
            ok=True,
            fault=f"read_only:{ro}",
            check=_ledger_checks(f["ro"], "md_ro-1", "pending"),
        ),
        # a full disk: while apply writes the new model, at the ledger's commit (add, apply, init)
        C(
            "add, disk full at the ledger commit",
            ["request", "add", full, "--subject", "s", "--indices", "7"],
            "disk is full",
            on=full,
            exit=1,
            fault="disk_full_commit",
        ),
        C(
            "apply, disk full while the model is written",
            ["request", "apply", full, *apply],
            "no space left",
            on=full,
            exit=1,
            fault="disk_full_model",
        ),
        C(
            "apply, disk full at the ledger commit",
            ["request", "apply", full, *apply],
            "disk is full",
            on=full,
            exit=1,
            fault="disk_full_commit",
        ),
        C(
            "init, disk full at the ledger commit",
            ["request", "init", new, "--dataset", "digits"],
            "disk is full",
            on=new,
            fault="disk_full_commit",
        ),
        C(
            "apply once the disk has space again",
            ["request", "apply", full, *apply],
            ok=True,
            check=_ledger_checks(f["full"], "md_full-1", "applied"),
        ),
        # --db URLs: a driver that is not installed, a refused connection, in memory, not a URL
        C(
            "add --db psycopg2 not installed",
            ["request", "add", new, "--subject", "s", "--indices", "3", "--db", pg],
            "psycopg2-binary",
            on=new,
            exit=2,
            fault="no_module:psycopg2",
            absent="s3cret",
        ),
        C(
            "add --db mysql driver not installed",
            ["request", "add", new, "--subject", "s", "--indices", "3", "--db", "mysql://u@127.0.0.1:1/x"],
            "mysqlclient",
            on=new,
            exit=2,
            fault="no_module:MySQLdb",
        ),
        C(
            "init --db in-memory",
            ["request", "init", new, "--dataset", "digits", "--db", "sqlite://"],
            "in-memory",
            on=new,
            exit=2,
        ),
        C(
            "apply --db in-memory",
            ["request", "apply", full, "--db", "sqlite:///:memory:"],
            "in-memory",
            on=full,
            exit=2,
        ),
        C("verify --db in-memory", ["request", "verify", full, "--db", "sqlite://"], "in-memory", on=full, exit=2),
        C(
            "init --db not a URL",
            ["request", "init", new, "--dataset", "digits", "--db", "ledger.db"],
            "URL",
            on=new,
            exit=2,
        ),
    ]
    try:
        import psycopg2  # noqa: F401  (a dev dependency: a driver that is present, a server that is not)
    except ImportError:
        pass
    else:
        cases += [
            C(
                f"{verb} --db connection refused",
                ["request", verb, d, *extra, "--db", pg],
                "refused",
                on=d,
                exit=2,
                absent="s3cret",
            )
            for verb, d, extra in [
                ("init", new, ["--dataset", "digits"]),
                ("add", full, ["--subject", "s", "--indices", "7"]),
                ("apply", full, []),
                ("verify", full, []),
            ]
        ]
    if "study_dropped" in f:  # a study that finished its trials, damaged afterwards: refused before training
        cases += [
            C(
                "tune, finished study with a dropped table",
                [*TU, f"sqlite:///{f['study_dropped']}"],
                "trial_values",
                on=str(f["studies"]),
                exit=2,
            ),
            C(
                "tune, finished study truncated",
                [*TU, f"sqlite:///{f['study_truncated']}"],
                "study storage",
                on=str(f["studies"]),
                exit=2,
            ),
            C(
                "tune, finished study with garbage pages",
                [*TU, f"sqlite:///{f['study_garbage']}"],
                "study storage",
                on=str(f["studies"]),
                exit=2,
            ),
        ]
    return cases


__all__ = ["CHILD", "FAULTS", "build_os_workspace", "inject", "os_cases"]
