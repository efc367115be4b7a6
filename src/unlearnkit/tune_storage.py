"""Where a tuning study lives: the checks `unlearnkit.tune` runs on an Optuna storage before any training (it opens
and is intact, and a study resumed under the same name was made for the same method, data and split)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, MissingDependencyError

IDENTITY_ATTR = "unlearnkit_identity"
INSTALL_HINT = "unlearnkit tune needs Optuna: pip install 'unlearnkit[tune]' (or pip install 'optuna>=3.6')"


def require_optuna() -> Any:
    """Import Optuna or raise `MissingDependencyError` with the install command."""
    try:
        import optuna
    except ImportError as exc:
        raise MissingDependencyError(INSTALL_HINT) from exc
    return optuna


def check_study(storage: str | None, study_name: str, identity: Mapping[str, Any] | None) -> None:
    """Before any training: ``storage`` opens, and a study ``study_name`` already in it was made for the same
    ``identity`` (another method's trials would be reported, and a preset written, as this one's)."""
    if storage is None:
        return
    optuna = require_optuna()
    _check_sqlite_study(storage, optuna)
    try:
        summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
    except Exception as exc:  # a damaged or foreign file: SQLAlchemy/Optuna errors of many kinds
        first = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(
            f"cannot open the study storage {storage} (--storage): {first}; move the damaged file away or pass "
            "another --storage"
        ) from None
    for summary in summaries:
        have = summary.user_attrs.get(IDENTITY_ATTR) if summary.study_name == study_name else None
        if have is not None and identity is not None and have != dict(identity):
            desc = lambda d: ", ".join(f"{k} {d.get(k)}" for k in sorted(d))  # noqa: E731
            raise ConfigError(
                f"study {study_name!r} in {storage} was made for {desc(have)}, not {desc(dict(identity))}: pass "
                "another --study-name (the default names the method, data and split)"
            )


def _check_sqlite_study(storage: str, optuna: Any) -> None:
    """An SQLite study file is checked read-only before Optuna opens it: Optuna re-creates a missing table on open
    (the trials' values would then be lost silently) and meets a damaged page only when it reads it."""
    import sqlite3

    from .ledger_chain import _sqlite_file

    file = _sqlite_file(storage) if storage.lower().startswith("sqlite") else None
    if file is None or not os.path.isfile(file) or os.path.getsize(file) == 0:
        return
    fix = "restore the file from a backup, or move it away (or pass another --storage) to start a new study"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{Path(file).resolve()}?mode=ro", uri=True)) as c:
            check = [r[0] for r in c.execute("PRAGMA quick_check")]
            have = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open the study storage {storage} (--storage): {exc}; {fix}") from None
    if check != ["ok"]:
        raise ConfigError(f"the study storage {storage} (--storage) is damaged ({'; '.join(check[:2])}); {fix}")
    if "studies" not in have:  # not an Optuna file (yet): Optuna creates its tables, or refuses a foreign schema
        return
    want = set(_table_names(optuna.storages.RDBStorage("sqlite:///:memory:").engine))
    missing = sorted(want - have)
    if missing:
        raise ConfigError(
            f"the study storage {storage} (--storage) is damaged: table(s) {', '.join(missing)} are missing; {fix}"
        )


def _table_names(engine: Any) -> list[str]:
    import sqlalchemy  # Optuna's own dependency

    return list(sqlalchemy.inspect(engine).get_table_names())


__all__ = ["IDENTITY_ATTR", "INSTALL_HINT", "check_study", "require_optuna"]
