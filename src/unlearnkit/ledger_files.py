"""The file-system side of a model directory (`unlearnkit.ledger`): a directory a command must write is checked
before any compute, and a write that fails names the operating system's reason and the fix."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .errors import ConfigError
from .ledger_chain import _sqlite_file

#: The lock file of a model directory (``unlearnkit.ledger.LOCK_FILE``).
LOCK_FILE = ".apply.lock"


def check_writable(path: Path, url: str, action: str) -> None:
    """Refuse, before any compute, a command that writes a directory it cannot write: the lock, the anchor and the
    model live in ``path``, and an SQLite ledger in its file and that file's folder (for its journal)."""
    file = _sqlite_file(url)
    targets = [path, path / LOCK_FILE] + ([Path(file), Path(file).parent] if file else [])
    for t in dict.fromkeys(targets):
        if t.exists() and not os.access(t, os.W_OK | (os.X_OK if t.is_dir() else 0)):
            raise ConfigError(
                f"{t} is read-only, and `{action}` writes there (the lock, the ledger, the anchor, the model); make "
                f"it writable (e.g. chmod -R u+w {path}) or work on a writable copy; nothing was changed"
            )


def os_failure(exc: OSError) -> str:
    """What an operating-system failure of a write was, and the fix for the usual ones."""
    what = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{what}; free space on that disk and run the command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{what} ({exc.filename}); make it writable and run the command again"
    return what


__all__ = ["check_writable", "os_failure"]
