"""``records.jsonl``: one JSON record per finished run, appended atomically, read tolerantly.

Appending writes one complete line with a single ``os.write`` on an ``O_APPEND`` descriptor, then
``fsync``: after a crash the file holds whole records plus, at worst, one torn last line. Readers skip a
torn last line; the runner cuts it off before appending again (`repair_tail`), so it never glues a new
record onto a fragment.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .._io import _json_default

RECORDS_FILE = "records.jsonl"


def encode_record(record: dict[str, Any]) -> bytes:
    """One record as a single JSON line (newline-terminated, no raw newlines inside)."""
    return (json.dumps(record, separators=(",", ":"), default=_json_default) + "\n").encode("utf-8")


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append ``record`` as one line: one ``os.write`` on an ``O_APPEND`` fd, then ``fsync``."""
    data = encode_record(record)
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # a short write on a regular file means a full disk or a quota: say so
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_tail(path: str | os.PathLike) -> int:
    """Cut a torn last line (bytes after the final newline) off ``path``; return how many bytes were cut.

    Only the process that owns the bench folder (it holds the lock) calls this.
    """
    path = Path(path)
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        # scan backwards in blocks for the last newline
        pos, block = size, 1 << 16
        while pos > 0:
            start = max(0, pos - block)
            fh.seek(start)
            chunk = fh.read(pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        else:
            keep = 0
        if keep == size:
            return 0
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any] | None, bool]]:
    """Yield ``(line_number, record or None, is_last)`` for every line; None for a line that does not parse."""
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    torn_tail = lines[-1] != b""  # no final newline: the last line was cut short
    if not torn_tail:
        lines = lines[:-1]
    for i, raw in enumerate(lines):
        is_last = i == len(lines) - 1
        if not raw.strip():
            continue
        if is_last and torn_tail:
            yield i + 1, None, True
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            yield i + 1, None, is_last
            continue
        yield i + 1, rec if isinstance(rec, dict) else None, is_last


def read_records(path: str | os.PathLike, *, warn: bool = True) -> list[dict[str, Any]]:
    """All whole records of a ``records.jsonl`` (a folder is read as ``folder/records.jsonl``).

    A torn last line is skipped silently (an interrupted append); a bad line elsewhere is skipped with a
    warning. Records with the same run key are kept once (the first).
    """
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.exists():
        return []
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    bad: list[int] = []
    for lineno, rec, is_last in iter_lines(path):
        if rec is None:
            if not is_last:
                bad.append(lineno)
            continue
        key = record_key(rec)
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        out.append(rec)
    if bad and warn:
        warnings.warn(
            f"{path}: skipped {len(bad)} line(s) that are not JSON records (lines "
            f"{', '.join(map(str, bad[:10]))}{'…' if len(bad) > 10 else ''})",
            stacklevel=2,
        )
    return out


def record_key(record: dict[str, Any]) -> str | None:
    """The bench run key of a record (``record["bench"]["run_key"]``), or None for records made elsewhere."""
    bench = record.get("bench")
    if isinstance(bench, dict) and isinstance(bench.get("run_key"), str):
        return bench["run_key"]
    return None


def make_readable(paths: list[Path]) -> None:
    """Give files written atomically (created 0600 by ``mkstemp``) the usual 0644, minus the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for p in paths:
        os.chmod(p, 0o644 & ~umask)
