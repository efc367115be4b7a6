"""The audit-models job: the extra models a task's strong audits need (`unlearnkit.audit_models`), with the cost
estimate sent to ``on_event`` before anything is trained."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

from . import EventSink, no_events

if TYPE_CHECKING:
    from ..oracle import TrainedModel
    from .task import Task


def audit_models(
    task: Task,
    original: nn.Module,
    retrained: TrainedModel,
    unlearned: nn.Module,
    noise_floor_model: nn.Module | None,
    runtime: float,
    *,
    progress: bool | None = None,
    on_event: EventSink = no_events,
) -> dict[str, Any]:
    """``extra_models`` for `unlearnkit.evaluation.evaluate` ({} when the audits need none)."""
    from ..audit_models import build_audit_models, plan_audit_models
    from ..evaluation.levels import resolve_audits

    assert task.method is not None and task.model is not None
    method = task.method.method
    plan = plan_audit_models(
        resolve_audits(task.audits),
        task.oracles,
        method_kinds=sorted(type(method).requires.split_kinds),
        train_seconds=retrained.meta.get("wall_seconds"),
        unlearn_seconds=runtime,
    )
    if not (plan.oracles or plan.unlearned_runs or plan.shadows):
        return {}
    on_event(plan.describe())
    for note in plan.notes:
        on_event(note)
    return build_audit_models(
        plan,
        bundle=task.bundle,
        model=task.model,
        split=task.split,
        oracle_split=task.oracle_split or task.split,
        method=method,
        original=original,
        retrained=retrained.model,
        unlearned=unlearned,
        noise_floor_model=noise_floor_model,
        seed=task.seed,
        model_kwargs=task.model_kwargs,
        device=task.device,
        progress=progress,
    )
