"""Process settings a caller scopes explicitly: progress bars and the model cache.

The CLI turns ``--no-progress`` and ``--no-cache`` into ``with settings.scoped(progress=False, model_cache=False):``
around the one job it runs, so every model the job trains or loads sees them, without passing flags through
``os.environ``. A library caller does the same, or passes ``progress=`` / ``use_cache=`` to the function it calls.
Outside any scope the user's environment decides (``UNLEARNKIT_PROGRESS=0``, ``UNLEARNKIT_NO_CACHE=1``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

_PROGRESS: ContextVar[bool | None] = ContextVar("unlearnkit_progress", default=None)
_MODEL_CACHE: ContextVar[bool | None] = ContextVar("unlearnkit_model_cache", default=None)
NO_CACHE_ENV = "UNLEARNKIT_NO_CACHE"
PROGRESS_ENV = "UNLEARNKIT_PROGRESS"


def progress_default() -> bool:
    """Whether progress bars show when a call does not say: the scope, else ``$UNLEARNKIT_PROGRESS``."""
    scoped = _PROGRESS.get()
    if scoped is not None:
        return scoped
    return os.environ.get(PROGRESS_ENV, "1") != "0"


def model_cache_default() -> bool:
    """Whether the model cache is read and written: the scope, else not ``$UNLEARNKIT_NO_CACHE``."""
    scoped = _MODEL_CACHE.get()
    if scoped is not None:
        return scoped
    return os.environ.get(NO_CACHE_ENV, "") not in ("1", "true", "yes")


@contextlib.contextmanager
def scoped(*, progress: bool | None = None, model_cache: bool | None = None) -> Iterator[None]:
    """Within the block: ``progress`` (None: unchanged) and ``model_cache`` (None: unchanged)."""
    tokens = []
    if progress is not None:
        tokens.append((_PROGRESS, _PROGRESS.set(progress)))
    if model_cache is not None:
        tokens.append((_MODEL_CACHE, _MODEL_CACHE.set(model_cache)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


__all__ = ["model_cache_default", "progress_default", "scoped"]
