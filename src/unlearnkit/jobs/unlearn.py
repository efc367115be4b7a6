"""The unlearn job: your checkpoint + a forget spec + a method -> the unlearned model and an audit that needs no
retrained model (``unlearnkit unlearn``). And `unlearn_batch`, the compute of a ledger's ``request apply``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from .task import Task


@dataclass
class UnlearnResult:
    """What an unlearn job made: the model, its audit and the run's seconds."""

    model: nn.Module
    original: nn.Module
    method: str
    audit: dict[str, Any]
    seconds: float


def unlearn_task(task: Task, *, audit: bool = True, checkpoint: Any = None) -> UnlearnResult:
    """Load the task's checkpoint (any kind, see `unlearnkit.jobs.checkpoints`) unless ``checkpoint`` (a model) is
    given, unlearn the task's forget set with its method, and audit the result against the original."""
    from ..evaluation.without_retrain import audit_without_retrain
    from ..methods.base import UnlearnData
    from ..runner import run_method
    from .checkpoints import load_checkpoint

    assert task.method is not None, "an unlearn task names a method"
    if checkpoint is None:
        assert task.checkpoint is not None, "an unlearn task names a checkpoint"
        checkpoint = load_checkpoint(task.checkpoint, expect={"num_classes": task.bundle.info.num_classes})
    method = task.method.method
    res = run_method(
        method, checkpoint, UnlearnData.from_split(task.bundle, task.split), device=task.device, seed=task.seed
    )
    unlearned = res.model.cpu()
    report = (
        audit_without_retrain(unlearned, task.bundle, task.split, original=checkpoint, device=str(task.device))
        if audit
        else {}
    )
    # no silent no-op or wreck: the measured outcome and the method's own statements travel with the audit
    report["run"] = {"outcome": res.outcome, "detail": res.outcome_detail, "stop_reason": res.stop_reason,
                     "report": res.report}  # fmt: skip
    return UnlearnResult(unlearned, checkpoint, method.name, report, res.seconds)


def require_complete(run: dict[str, Any] | None, allow_partial: bool, what: str) -> None:
    """Raise `IncompleteUnlearningError` unless the run's measured outcome is ``complete`` or ``allow_partial``."""
    from ..errors import IncompleteUnlearningError

    run = run or {}
    outcome = str(run.get("outcome", "complete"))
    if outcome != "complete" and not allow_partial:
        raise IncompleteUnlearningError(outcome, str(run.get("detail") or ""), what)


def unlearn_job(task: Task, out: str | Path, *, allow_partial: bool = False) -> UnlearnResult:
    """`unlearn_task`, then write ``unlearned.safetensors`` and ``audit.json`` into ``out`` (all or nothing).

    A run whose outcome is not ``complete`` (`unlearnkit.outcome`) raises `IncompleteUnlearningError` and writes
    nothing, unless ``allow_partial``.
    """
    from .._io import write_dir_atomic, write_json_atomic
    from .checkpoints import save_checkpoint

    res = unlearn_task(task)
    require_complete(res.audit.get("run"), allow_partial, f"nothing was written to {Path(out).name}")
    assert task.method is not None
    res.audit["runtime_seconds"] = res.seconds
    res.audit["method"] = {"name": res.method, "config": task.method.method.config.to_dict()}
    res.audit["split"] = task.split.to_dict()
    report = getattr(res.model, "last_deletion", None)
    if getattr(report, "record_key", None) == "head":  # the guarantee and where it holds, said in the audit
        res.audit["head"] = report.to_dict()  # type: ignore[union-attr]

    def fill(tmp: Path) -> None:
        save_checkpoint(res.model, tmp / "unlearned.safetensors")
        write_json_atomic(tmp / "audit.json", res.audit)

    write_dir_atomic(out, fill, last="audit.json")
    return res


@dataclass
class BatchResult:
    """The compute of one ledger application: the new model, the method's name and config, the audit record."""

    model: nn.Module
    method: str
    config: dict[str, Any]
    record: dict[str, Any]


def unlearn_batch(
    model_path: str | Path,
    *,
    dataset: str,
    registered: tuple[int, str],
    forget: list[int],
    deleted: set[int],
    method: str,
    config: dict[str, Any] | None = None,
    device: str = "cpu",
    seed: int = 0,
    data_dir: str | None = None,
    audit: bool = True,
) -> BatchResult:
    """Unlearn the training indices ``forget`` from the model at ``model_path`` (a ledger's pending batch).

    ``registered`` is the (size, content digest) of the training set the model was registered with: other data
    are refused. The retain set leaves out the ``deleted`` indices of earlier applications.
    """
    from ..cache import dataset_digest
    from ..data import load_dataset
    from ..errors import IncompatibleError
    from .checkpoints import load_checkpoint
    from .task import build_method, ledger_task, restrict_to_deletable

    choice = build_method(method, config)
    bundle = load_dataset(dataset, data_dir)
    if len(bundle.train) != registered[0] or dataset_digest(bundle.train) != registered[1]:
        raise IncompatibleError("the training data differ from the data registered with this model")
    model = load_checkpoint(model_path)
    task = ledger_task(bundle, forget, deleted, seed=seed, device=device, method=choice, checkpoint=model_path)
    task = restrict_to_deletable(task, model_path, forget_too=False)
    split = task.split
    res = unlearn_task(task, audit=audit, checkpoint=model)
    record: dict[str, Any] = {"seconds": res.seconds, "forget": len(split.forget), "retain": len(split.retain)}
    record["run"] = res.audit.get("run")  # the measured outcome (complete | partial | no_op | wrecked), always
    report = getattr(res.model, "last_deletion", None)
    if report is not None:  # SISA: its cost ("cost"); a head model: guarantee, scope, bounds, budget ("head")
        record[getattr(report, "record_key", "cost")] = report.to_dict()
    if audit:
        record["audit"] = res.audit
    return BatchResult(res.model, choice.method.name, choice.method.config.to_dict(), record)


__all__ = ["BatchResult", "UnlearnResult", "require_complete", "unlearn_batch", "unlearn_job", "unlearn_task"]
