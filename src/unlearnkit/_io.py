"""Small I/O helpers: atomic writes and JSON."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically.

    A crash at any point leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, _w)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import dataclasses

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def sha256_json(obj: Any) -> str:
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=_json_default).encode())


# ------------------------------------------------------------------------------------------- output checks
def _nearest_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be written, before any compute (`ConfigError` naming the fix)."""
    from .errors import ConfigError

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {p} exists and is not a folder; pass a folder path (or remove that file)")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise ConfigError(f"{flag} {p} cannot be created: {base} is a file, not a folder; pass another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {p} is not writable ({base} is read-only); pass a writable folder")
    return p


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Refuse an output file path that cannot be written (a folder, a read-only or file parent)."""
    from .errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag} {p} is a folder; pass a file path, e.g. {p / 'result.json'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise ConfigError(f"{flag} {p} is not writable; pass another path")
    check_output_dir(p.parent, flag + " folder") if str(p.parent) not in ("", ".") else None
    return p


def write_dir_atomic(out: str | os.PathLike, fill: Callable[[Path], None], last: str | None = None) -> Path:
    """Let ``fill(tmp)`` write a result's files into a temporary sibling folder, then move them into ``out``.

    A new ``out`` is created by one rename, so a crash or a full disk leaves either nothing or the whole result.
    Into an existing folder the files are moved one by one (each a rename, nothing left to write), ``last`` (the
    record marking completion) at the end; files of the folder that the result does not hold are left alone.
    """
    import shutil

    out = check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        fill(tmp)
        if not out.exists():
            os.replace(tmp, out)
            return out
        names = sorted(os.listdir(tmp), key=lambda n: (n == last, n))
        for n in names:
            dest = out / n
            if dest.is_dir() and not (tmp / n).is_dir():
                from .errors import ConfigError

                raise ConfigError(f"{dest} is a folder; cannot write the result file {n} there")
            os.replace(tmp / n, dest)
        return out
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
