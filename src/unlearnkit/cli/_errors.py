"""One line for an error the library did not raise on purpose (its dependencies' and the operating system's):
the CLI's top-level handler prints it instead of a traceback (``--debug`` shows the traceback)."""

from __future__ import annotations

import errno


def describe(exc: BaseException) -> str:
    """What went wrong, in one line, and where that is possible the fix."""
    mod = type(exc).__module__ or ""
    if mod.startswith("sqlalchemy"):
        from ..ledger_chain import db_cause_and_fix

        cause, fix = db_cause_and_fix(exc)
        return f"the ledger database failed: {cause}; nothing was changed; " + (fix or "check --db and the ledger file")
    if "safetensor" in mod.lower() or "safetensor" in type(exc).__name__.lower():
        return f"cannot read a checkpoint: {_first(exc)} (the file is damaged or not a safetensors file)"
    if isinstance(exc, MemoryError):
        return "out of memory; use a smaller input (fewer indices, a smaller model or batch size)"
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        if exc.errno == errno.ENOSPC:
            return f"no space left on the device{where}; free space and run the command again (nothing was replaced)"
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied{where}: the file or folder is read-only for you"
        return f"{exc.strerror or _first(exc)}{where}"
    return (
        f"unexpected {type(exc).__name__}: {_first(exc)} (run again with --debug for the traceback, and please "
        "report it)"
    )


def _first(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split())[:300] if lines else type(exc).__name__


__all__ = ["describe"]
