"""The run job: one experiment end to end from a `Task` — original and retrained oracle (cached), unlearn,
extra audit models, evaluate — and `save_experiment` to write its outputs all or nothing.

`unlearnkit run`, `unlearnkit demo` and the benchmark runner reach it through
`unlearnkit.pipeline.run_experiment` or `run_job`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..data.splits import Split, split_for
from ..errors import IncompatibleError
from ..oracle import TrainedModel, train_or_load
from . import EventSink, no_events

if TYPE_CHECKING:
    from ..evaluation import EvaluationCache
    from .task import Task

NOISE_FLOOR_SEED_OFFSET = 1000


@dataclass
class Experiment:
    record: dict[str, Any]
    unlearned: nn.Module
    split: Split


def run_job(
    task: Task,
    *,
    noise_floor: bool = True,
    eval_cache: EvaluationCache | None = None,
    progress: bool | None = None,
    use_cache: bool = True,
    on_event: EventSink = no_events,
) -> Experiment:
    """Unlearn ``task`` and evaluate against the retrained oracle; the record and the unlearned model.

    ``use_cache=False`` neither reads nor writes the model cache (for every model of the run); ``on_event``
    receives what the job has to say on the way (the cost of the extra models of strong audits).
    """
    from ..settings import scoped

    with scoped(model_cache=None if use_cache else False):
        return _run(task, noise_floor, eval_cache, progress, on_event)


def _run(
    task: Task, noise_floor: bool, eval_cache: EvaluationCache | None, progress: bool | None, on_event: EventSink
) -> Experiment:
    from ..cache import model_sha256
    from ..evaluation import RunInfo, evaluate
    from ..methods import UnlearnData
    from ..runner import run_method

    assert task.method is not None and task.model is not None, "a run task names a method and a model"
    bundle, split, dev, seed = task.bundle, task.split, task.device, task.seed
    m = task.method.method
    if task.checkpoint is not None:
        original = load_original(task.checkpoint, task.model, bundle, task.model_kwargs, dev)
        original_meta: dict[str, Any] = {"source": task.checkpoint.name}
    else:
        t = train_model(task, "original", progress=progress)
        original, original_meta = t.model, t.meta
    oracle_split = task.oracle_split or split
    retrained = train_model(task, "retrained", progress=progress)
    second = train_model(task, "noise_floor", progress=progress).model if noise_floor else None

    data = replace(
        UnlearnData.from_split(bundle, split), original_weight_decay=recipe_weight_decay(original_meta.get("recipe"))
    )
    result = run_method(m, original, data, device=dev, seed=seed, progress=progress)
    unlearned, runtime = result.model, result.seconds

    from .audits import audit_models

    extra_models = audit_models(
        task, original, retrained, unlearned, second, runtime, progress=progress, on_event=on_event
    )
    record = evaluate(
        unlearned,
        bundle,
        split,
        original=original,
        retrained=retrained.model,
        device=dev,
        run=RunInfo(
            method=task.method.name,
            config=m.config.to_dict(),
            seed=seed,
            runtime_seconds=runtime,
            runtime_setup_seconds=result.setup_seconds,
            runtime_update_seconds=result.update_seconds,
            retrain_seconds=retrained.meta.get("wall_seconds"),
            noise_floor=second,
            extra_models=extra_models or None,
        ),
        options=_eval_options(task, eval_cache),
    )
    record.setdefault("method", {})["preset"] = task.method.preset_source
    record["method"]["stop_reason"] = result.stop_reason
    record["method"]["outcome"] = result.outcome  # complete | partial | no_op | wrecked (unlearnkit.outcome)
    record["method"]["report"] = result.report
    record["model"]["kwargs"] = task.model_kwargs
    record["model"]["original_recipe"] = original_meta.get("recipe")
    record["method"]["original_weight_decay"] = data.original_weight_decay  # what weight_decay=None resolves to
    if oracle_split is not split:
        record["model"]["retrained_split"] = {"spec": oracle_split.spec, "size_forget": len(oracle_split.forget)}
    if model_sha256(unlearned) == model_sha256(original):  # a silent no-op must not look like a result
        record["unchanged_from_original"] = True
        record.setdefault("warnings", []).append(
            "the unlearned model is bit-identical to the original: the method changed no weight "
            "(check its options, e.g. epochs=0 or lr=0)"
        )
    return Experiment(record, unlearned, split)


MODEL_ROLES = ("original", "retrained", "noise_floor")


def train_model(task: Task, role: str, *, progress: bool | None = None) -> TrainedModel:
    """One model a run task is scored with, trained or loaded from the cache (`unlearnkit.oracle.train_or_load`).

    ``role``: ``original`` (every training sample), ``retrained`` (the oracle: the retain set of the oracle split)
    or ``noise_floor`` (a second oracle, seed + `NOISE_FLOOR_SEED_OFFSET`, for the noise floor). `run_job` gets its
    models here, and the bench trains them ahead of the runs that share them (`unlearnkit.bench.ray_executor`).
    """
    if role not in MODEL_ROLES:
        raise ValueError(f"role must be one of {', '.join(MODEL_ROLES)}, got {role!r}")
    assert task.model is not None, "a run task names a model"
    split = None if role == "original" else task.oracle_split or task.split
    return train_or_load(
        task.bundle,
        task.model,
        split,
        seed=task.seed + (NOISE_FLOOR_SEED_OFFSET if role == "noise_floor" else 0),
        model_kwargs=task.model_kwargs,
        device=task.device,
        progress=progress,
    )


def _eval_options(task: Task, cache: EvaluationCache | None) -> Any:
    from ..evaluation import EvalOptions

    return EvalOptions(metrics=task.metrics, audits=task.audits, cache=cache)


def recipe_weight_decay(recipe: dict[str, Any] | None) -> float | None:
    """The weight decay of an original's training recipe (its checkpoint metadata) as an unlearning default.

    Only coupled (L2) decay carries over: SGD and Adam add ``wd · θ`` to the gradient, as the unlearning
    optimizers do; AdamW's decoupled decay is another quantity, so it gives None (the library default then).
    None when the recipe is unknown (e.g. a user's ``--original`` checkpoint).
    """
    if not recipe or recipe.get("optimizer") not in ("sgd", "adam"):
        return None
    wd = recipe.get("weight_decay")
    return float(wd) if isinstance(wd, (int, float)) and not isinstance(wd, bool) else None


def manipulate(
    bundle: Any,
    manipulation: Any,
    seed: int,
    *,
    model: str,
    model_kwargs: dict[str, Any] | None = None,
    device: Any = "cpu",
    progress: bool | None = None,
) -> Any:
    """``bundle`` manipulated under ``seed``; a confusion without a class pair (and no dataset default) takes the
    most-confused pair of the clean original of ``model`` (trained or loaded from the cache)."""
    from ..data.manipulations import DEFAULT_PAIRS, Confusion, apply, parse_manipulation

    m = parse_manipulation(manipulation)
    clean = None
    if isinstance(m, Confusion) and m.a is None and bundle.info.name not in DEFAULT_PAIRS:
        clean = train_or_load(
            bundle,
            model,
            None,
            seed=seed,
            model_kwargs=model_kwargs,
            device=device,
            progress=progress,
        )
    return apply(bundle, m, seed, model=clean.model if clean else None, device=device)[0]


def load_original(
    path: str | Path, model: str, bundle: Any, model_kwargs: dict[str, Any], device: Any = "cpu"
) -> nn.Module:
    """Load the user's ``--original`` checkpoint after checking it against ``--model``/``--dataset``.

    Refused: a retrained oracle (role stored in the file), a checkpoint of another training set (split digest),
    another architecture, input size, channel count or class count. A plain state dict (``.pt`` or a safetensors
    file without our metadata) is loaded into ``--model`` built for the dataset.
    """
    from ..errors import CheckpointError
    from ..models import checkpoint_info, create_model, load_into, load_model, read_checkpoint

    info = bundle.info
    meta = checkpoint_info(path)
    name = Path(path).name
    if meta["role"] == "retrained":
        raise IncompatibleError(
            f"--original {name} is a retrained oracle (its stored role is 'retrained'), not "
            "an original model: comparing it with the retrained model would give a meaningless "
            "gap of 0; pass the model trained on the full training set"
        )
    if meta["split_sha256"] and meta["role"] == "original":
        full = split_for(bundle, None, 0).sha256
        if meta["split_sha256"] != full:
            raise IncompatibleError(
                f"--original {name} was trained on another training set (split digest "
                f"{meta['split_sha256'][:12]}…, this dataset's full set is {full[:12]}…); "
                "pass an original trained on this --dataset"
            )
    if meta["config"] is None:
        net = create_model(model, info.num_classes, info.channels, info.image_size, info.mean, info.std, **model_kwargs)
        state, _ = read_checkpoint(path)
        try:
            load_into(net, state, source=f"--original {name}")
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc} (the file carries no model config, so it was loaded into --model {model} built for {info.name})"
            ) from None
        return net.to(device)
    expect = {
        "name": model,
        "num_classes": info.num_classes,
        "in_channels": info.channels,
        "image_size": info.image_size,
    }
    return load_model(path, expect=expect, device=device, allow_timm=model.startswith("timm:"))


def save_experiment(exp: Experiment, out: str | Path) -> Path:
    """Write record.json, unlearned.safetensors and split.json into ``out``, all or nothing.

    The files go into a temporary sibling folder first and are moved into place at the end (record.json last),
    so a crash or a full disk leaves the previous state or the whole result. The weights carry the role
    ("unlearned") and the split digest in their metadata, which `unlearnkit eval` reads.
    """
    from .._io import write_dir_atomic
    from ..evaluation import write_record
    from ..models import DATASET_KEY, ROLE_KEY, SPLIT_KEY, save_model

    exp.record.setdefault("files", {}).update({"unlearned": "unlearned.safetensors", "split": "split.json"})

    def fill(tmp: Path) -> None:
        save_model(
            exp.unlearned,
            tmp / "unlearned.safetensors",
            extra={ROLE_KEY: "unlearned", SPLIT_KEY: exp.split.sha256, DATASET_KEY: exp.split.dataset},
        )
        exp.split.save(tmp / "split.json")
        write_record(exp.record, tmp / "record.json")

    return write_dir_atomic(out, fill, last="record.json")


__all__ = [
    "MODEL_ROLES",
    "NOISE_FLOOR_SEED_OFFSET",
    "Experiment",
    "load_original",
    "manipulate",
    "recipe_weight_decay",
    "run_job",
    "save_experiment",
    "train_model",
]
