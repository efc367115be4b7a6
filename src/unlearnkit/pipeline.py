"""One unlearning experiment end to end: original and retrained oracle (cached), unlearn, evaluate.

`run_experiment` is what `unlearnkit demo` and the benchmark runner call: it builds the `unlearnkit.jobs.task.Task`
(every check before any compute: names, forget spec, method config, method × split compatibility) and runs it
with `unlearnkit.jobs.run.run_job`. The pieces live in the job layer and are re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .data.splits import ForgetSpec
from .jobs import EventSink, no_events
from .jobs.run import (
    NOISE_FLOOR_SEED_OFFSET,
    Experiment,
    load_original,
    manipulate,
    recipe_weight_decay,
    run_job,
    save_experiment,
    train_model,
)
from .jobs.task import check_seed, resolve_run_task, split_kind
from .jobs.task import prepare_method as _prepare

if TYPE_CHECKING:
    from .evaluation import EvaluationCache
    from .methods import Method
    from .oracle import TrainedModel


def prepare_method(
    method: str,
    dataset: str,
    model: str,
    forget: str | ForgetSpec,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> Method:
    """Resolve presets + overrides into a validated method (raises before any compute)."""
    return _prepare(method, dataset, model, forget, overrides, preset).method


def run_experiment(
    dataset: str,
    model: str,
    forget: str | ForgetSpec,
    method: str,
    *,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    metrics: list[str] | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool | None = None,
    original_path: str | None = None,
    preset: str | None = None,
    noise_floor: bool = True,
    eval_cache: EvaluationCache | None = None,
    manipulation: str | None = None,
    audits: str | list[str] | None = None,
    oracles: int = 0,
    on_event: EventSink = no_events,
) -> Experiment:
    """Run one (dataset, model, forget spec, method, seed) experiment and return its record and model.

    ``eval_cache`` is shared by the runs of one benchmark (see `unlearnkit.evaluation.EvaluationCache`).
    ``manipulation`` (e.g. ``badnets:rate=0.05,value=1``, see `unlearnkit.data.manipulations`) manipulates the
    training data under ``seed`` first: the original learns it, and for ``poisoned`` forget specs the retrained
    oracle is trained on the clean remainder (every manipulated sample removed, known to the defender or not).
    ``audits`` is an audit level (``none`` | ``standard``, the default | ``strong``) and/or audit names
    (`unlearnkit.evaluation.levels.resolve_audits`); ``oracles`` = K ≥ 3 trains K retrained oracles (cached)
    for the oracle-distribution margin score. The extra models strong audits need are trained through the model
    cache after their cost estimate is sent to ``on_event`` (`unlearnkit.audit_models`).
    """
    task = resolve_run_task(
        dataset,
        model,
        forget,
        method,
        overrides=overrides,
        preset=preset,
        seed=seed,
        model_kwargs=model_kwargs,
        metrics=metrics,
        audits=audits,
        oracles=oracles,
        manipulation=manipulation,
        device=device,
        data_dir=data_dir,
        original=original_path,
        progress=progress,
    )
    return run_job(task, noise_floor=noise_floor, eval_cache=eval_cache, progress=progress, on_event=on_event)


def prepare_model(
    dataset: str,
    model: str,
    forget: str | ForgetSpec,
    method: str,
    role: str,
    *,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    manipulation: str | None = None,
    device: str = "auto",
    data_dir: str | None = None,
) -> TrainedModel:
    """Train (or load from the cache) one model that `run_experiment` with the same arguments would use.

    ``role`` is ``original``, ``retrained`` or ``noise_floor`` (`unlearnkit.jobs.run.train_model`). The bench trains
    the models a grid cell shares this way before its runs start, so each is trained once and in parallel.
    """
    task = resolve_run_task(
        dataset,
        model,
        forget,
        method,
        overrides=overrides,
        seed=seed,
        model_kwargs=model_kwargs,
        manipulation=manipulation,
        device=device,
        data_dir=data_dir,
        progress=False,
    )
    return train_model(task, role, progress=False)


__all__ = [
    "NOISE_FLOOR_SEED_OFFSET",
    "Experiment",
    "check_seed",
    "load_original",
    "manipulate",
    "prepare_method",
    "prepare_model",
    "recipe_weight_decay",
    "run_experiment",
    "save_experiment",
    "split_kind",
]
