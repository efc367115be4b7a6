"""The tune job: `unlearnkit.tune.tune` with the study stored beside its output (``study.db``) and the ranking
and preset block written to ``out`` (JSON), as ``unlearnkit tune`` does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import EventSink, no_events

if TYPE_CHECKING:
    from ..tune import TuneResult


def default_storage(out: str | Path | None) -> str | None:
    """``sqlite:///<folder of out>/study.db``: the study resumes when the same command runs again (None without
    ``out``: the study lives in memory)."""
    return f"sqlite:///{Path(out).parent / 'study.db'}" if out else None


def tune_job(
    method: str,
    dataset: str,
    model: str,
    forget: str,
    *,
    out: str | Path | None = None,
    storage: str | None = None,
    on_event: EventSink = no_events,
    **options: Any,
) -> TuneResult:
    """Run the study (``options`` are `unlearnkit.tune.tune`'s) and write its result to ``out`` when given."""
    from .._io import write_json_atomic
    from ..tune import require_optuna, tune

    require_optuna()  # before anything else: says how to install it
    storage = storage if storage is not None else default_storage(out)
    if storage and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    res = tune(method, dataset, model, forget, storage=storage, on_event=on_event, **options)
    if out:
        write_json_atomic(out, res.to_json())
    return res


__all__ = ["default_storage", "tune_job"]
