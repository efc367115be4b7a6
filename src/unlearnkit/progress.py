"""Progress bars (rich), silent when disabled or when output is not a terminal and UNLEARNKIT_PROGRESS=0."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def progress_enabled(flag: bool | None = None) -> bool:
    from .settings import progress_default

    if flag is not None:
        return flag
    return progress_default()


class _Bar:
    def __init__(self, progress, task) -> None:  # type: ignore[no-untyped-def]
        self._p, self._t = progress, task

    def advance(self, n: int = 1, **fields: object) -> None:
        if self._p is not None:
            desc = fields.pop("description", None)
            self._p.update(self._t, advance=n, **({"description": desc} if desc else {}))

    def set(self, description: str) -> None:
        if self._p is not None:
            self._p.update(self._t, description=description)


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool | None = None) -> Iterator[_Bar]:
    """A rich progress bar with ETA on stderr; a no-op bar when disabled."""
    if not progress_enabled(enabled):
        yield _Bar(None, None)
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as p:
        yield _Bar(p, p.add_task(description, total=total))
