"""`Task`: one unlearning request, validated and resolved once at the edge (CLI or API) and passed down.

A Task holds what every job needs and nothing it has to work out again: the dataset (loaded, manipulated when
asked), the forget spec *parsed once* (an ``indices:FILE`` is read once), the split built from it, the model
source (an architecture name, or a checkpoint file), the method with its config resolved from presets once, the
device, the seed and the audits. Builders check everything before any compute, in the order a user meets the
flags: names, forget spec, seed, method, audits, metrics, model options; only then is the data loaded.

* `resolve_run_task` — ``unlearnkit run`` / `unlearnkit.pipeline.run_experiment` (against the retrained oracle);
* `resolve_unlearn_task` — ``unlearnkit unlearn`` (your checkpoint, no oracle);
* `ledger_task` — a batch of deletion requests (``request apply``): a split from training indices through
  `unlearnkit.data.splits.make_split`'s checks, with the already deleted indices out of the retain set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..data.splits import ForgetSpec, Split, parse_forget_spec, split_for
from ..errors import ConfigError, IncompatibleError

if TYPE_CHECKING:
    from ..data.datasets import DatasetBundle
    from ..methods import Method

#: The oracle of a ``poisoned`` forget spec never saw any manipulated sample, whatever part the defender knows.
ALL_POISONED = ForgetSpec("poisoned", fraction=1.0, source="poisoned")


@dataclass(frozen=True)
class MethodChoice:
    """A method built from its presets (resolved once) and the user's overrides."""

    method: Method
    name: str  # canonical name
    preset_source: str  # where the config's numbers come from (a preset table, or the class defaults)


@dataclass(frozen=True, eq=False)
class Task:
    """A validated unlearning request (see the module docstring)."""

    dataset: str  # the bundle's canonical name
    forget: ForgetSpec
    seed: int
    device: torch.device
    bundle: DatasetBundle
    split: Split
    method: MethodChoice | None = None
    model: str | None = None  # architecture name (run: originals and oracles come from the cache)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    checkpoint: Path | None = None  # a model file instead (unlearn, apply, run --original)
    audits: list[str] = field(default_factory=lambda: ["standard"])
    oracles: int = 0
    metrics: list[str] | None = None
    oracle_split: Split | None = None  # the retrained oracle's split when it differs (poisoned)

    @property
    def kind(self) -> str:
        """``class`` or ``random``: the forgetting kind methods and presets are keyed by."""
        return split_kind(self.forget)


def split_kind(spec: str | ForgetSpec) -> str:
    """``class`` for class-wise specs, else ``random`` (random, indices and poisoned samples)."""
    return "class" if parse_forget_spec(spec).kind == "class" else "random"


def check_seed(seed: Any, flag: str = "seed") -> int:
    """A seed must be an integer in [0, 2^63): numpy and torch refuse others deep inside the compute."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"{flag} must be an integer in [0, 2^63), got {seed!r}")
    return seed


def prepare_method(
    method: str,
    dataset: str | None,
    model: str | None,
    forget: str | ForgetSpec,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> MethodChoice:
    """Presets (resolved once) + ``overrides`` into a validated method; raises before any compute.

    A method that does not support the spec's forgetting kind is refused. Without a preset tuned for
    (dataset, model, kind), a method that can stop by itself gets ``stop_at_target=True``.
    """
    from ..methods import METHODS, preset_config

    fs = parse_forget_spec(forget)
    kind = split_kind(fs)
    cls = METHODS.get(method)
    if kind not in cls.requires.split_kinds:
        label = "poisoned-sample" if fs.kind == "poisoned" else kind
        raise IncompatibleError(
            f"method {METHODS.canonical(method)!r} supports only "
            f"{'/'.join(sorted(cls.requires.split_kinds))} forgetting, not {label} ({fs.source or str(fs)!r})"
        )
    if "plain" not in cls.requires.model_kinds:
        raise IncompatibleError(
            f"method {METHODS.canonical(method)!r} deletes from {'/'.join(sorted(cls.requires.model_kinds))} models "
            "only, and `run` trains plain networks: train a head model (`unlearnkit train --head ridge|certified "
            "--backbone …`) and delete with `unlearnkit unlearn` or `unlearnkit request apply`"
        )
    values, source = preset_config(method, dataset, model, kind, preset)
    overrides = dict(overrides or {})
    untuned = source.startswith(("default", "class defaults"))
    if untuned and "stop_at_target" in cls.Config.field_names() and "stop_at_target" not in overrides:
        # No preset was tuned for this (dataset, model, kind): stop by the rule that needs no retrained model.
        overrides["stop_at_target"] = True
    values.update(overrides)
    canonical = METHODS.canonical(method)
    return MethodChoice(cls(cls.Config.build(values, canonical)), canonical, source)


def build_method(method: str, config: dict[str, Any] | None = None) -> MethodChoice:
    """A method from its [default] preset and ``config`` (no dataset-specific preset): ``unlearn`` and ``apply``."""
    from ..methods import METHODS, create_method

    m = create_method(method, **dict(config or {}))
    return MethodChoice(m, METHODS.canonical(method), "")


def resolve_run_task(
    dataset: str,
    model: str,
    forget: str | ForgetSpec,
    method: str,
    *,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
    seed: int = 0,
    model_kwargs: dict[str, Any] | None = None,
    metrics: list[str] | None = None,
    audits: str | list[str] | None = None,
    oracles: int = 0,
    manipulation: str | Any = None,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    original: str | Path | None = None,
    progress: bool | None = None,
) -> Task:
    """The Task of one experiment against the retrained oracle; every check before any compute."""
    from ..audit_models import plan_audit_models
    from ..data import load_dataset
    from ..data.manipulations import parse_manipulation
    from ..device import resolve_device
    from ..evaluation.levels import resolve_audits
    from ..models import MODELS, validate_kwargs

    MODELS.get(model)
    manip = parse_manipulation(manipulation)
    fs = parse_forget_spec(forget)  # the one parse of the spec (an indices file is read here, once)
    if fs.kind == "poisoned" and manip is None:
        raise ConfigError(f"forget spec {forget!r} needs manipulated data: pass --manipulation (manipulation=)")
    check_seed(seed)
    choice = prepare_method(method, dataset, model, fs, overrides, preset)
    audit_items = (audits.split(",") if isinstance(audits, str) else list(audits)) if audits else ["standard"]
    if oracles and "oracle_margins" not in resolve_audits(audit_items):
        audit_items.append("oracle_margins")
    plan_audit_models(resolve_audits(audit_items), oracles)  # bad audit names or K fail here, before any compute
    if metrics:
        from ..evaluation import resolve_selection

        resolve_selection(metrics)  # a typo in a metric name fails here, not after unlearning
    kwargs = dict(model_kwargs or {})
    validate_kwargs(MODELS.canonical(model), kwargs)
    dev = resolve_device(device)
    bundle = load_dataset(dataset, data_dir)
    if manip is not None:
        from .run import manipulate

        bundle = manipulate(bundle, manip, seed, model=model, model_kwargs=kwargs, device=dev, progress=progress)
    split = split_for(bundle, fs, seed)
    oracle_split = split_for(bundle, ALL_POISONED, seed) if fs.kind == "poisoned" else split
    return Task(
        dataset=bundle.info.name,
        forget=fs,
        seed=seed,
        device=dev,
        bundle=bundle,
        split=split,
        method=choice,
        model=model,
        model_kwargs=kwargs,
        checkpoint=Path(original) if original else None,
        audits=audit_items,
        oracles=oracles,
        metrics=metrics,
        oracle_split=oracle_split,
    )


def resolve_unlearn_task(
    checkpoint: str | Path,
    dataset: str,
    forget: str | ForgetSpec,
    method: str | None,
    *,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
) -> Task:
    """The Task of ``unlearnkit unlearn``: your checkpoint, a forget spec, a method (None: ``sisa`` for a SISA
    ensemble, ``head`` for a head model, else ``auto``); no retrained oracle."""
    from ..data import load_dataset
    from ..device import resolve_device

    if method is not None:
        build_method(method, config)  # bad names and options fail before the checkpoint is read
    if Path(checkpoint).is_dir():
        raise ConfigError(f"checkpoint {checkpoint} is a folder; pass the .safetensors file inside it")
    if not Path(checkpoint).is_file():
        raise ConfigError(f"checkpoint {checkpoint} does not exist")
    if method is None:
        from .checkpoints import checkpoint_kind

        method = {"sisa": "sisa", "head": "head"}.get(checkpoint_kind(checkpoint), "auto")
    choice = build_method(method, config)
    fs = parse_forget_spec(forget)
    bundle = load_dataset(dataset, data_dir)
    from ..guards import check_checkpoint_for

    # another dataset's model, or a gradient method on a SISA ensemble or a head model, fails here, before any compute
    check_checkpoint_for(checkpoint, bundle.info, method=choice.method.name, config=config)
    split = split_for(bundle, fs, seed)
    task = Task(
        dataset=bundle.info.name,
        forget=fs,
        seed=seed,
        device=resolve_device(device),
        bundle=bundle,
        split=split,
        method=choice,
        checkpoint=Path(checkpoint),
    )
    return restrict_to_deletable(task, checkpoint)


def restrict_to_deletable(task: Task, checkpoint: str | Path, *, forget_too: bool = True) -> Task:
    """For a head model: the forget spec selects among the images its head was trained on and has not deleted
    (``class:3`` = its deletable images of class 3; the public split that trained the backbone is not deletable),
    and the retain set is what the head keeps standing on. ``forget_too=False`` (a ledger batch, whose indices were
    checked when requested) leaves the forget set for the method to check. Other kinds: ``task`` unchanged."""
    from dataclasses import replace

    from .checkpoints import deletable_indices, read_deleted_mask

    allowed = deletable_indices(checkpoint)
    if allowed is None:
        return task
    ok = np.zeros(task.split.num_train, dtype=bool)
    ok[np.asarray(allowed, dtype=np.int64)] = True
    ok[np.asarray(read_deleted_mask(checkpoint) or [], dtype=np.int64)] = False
    s = task.split
    forget, retain = (s.forget[ok[s.forget]] if forget_too else s.forget), s.retain[ok[s.retain]]
    if len(forget) == 0:
        raise IncompatibleError(
            f"forget spec {s.spec!r} selects no image the head model can delete (its deletable data: the "
            f"{int(ok.sum())} images its head was trained on and has not deleted); pick a spec within them"
        )
    split = Split(s.dataset, s.spec, s.seed, forget, retain, s.test, s.num_train, s.forget_classes)
    return replace(task, split=split)


def ledger_task(
    bundle: Any,
    forget: list[int],
    deleted: set[int],
    *,
    seed: int,
    device: str | torch.device,
    method: MethodChoice,
    checkpoint: str | Path,
) -> Task:
    """The Task of a batch of deletion requests: ``forget`` goes through `make_split`'s checks (in range, no
    duplicate); the retain set is every training index neither forgotten now nor ``deleted`` before."""
    from ..device import resolve_device

    fs = ForgetSpec("indices", indices=tuple(int(i) for i in forget), source="indices:ledger")
    full = split_for(bundle, fs, seed)
    gone = np.fromiter((int(i) for i in deleted), dtype=np.int64, count=len(deleted))
    retain = full.retain[~np.isin(full.retain, gone)] if len(gone) else full.retain
    split = Split(full.dataset, "indices:ledger", seed, full.forget, retain, full.test, full.num_train)
    return Task(
        dataset=bundle.info.name,
        forget=fs,
        seed=seed,
        device=resolve_device(device),
        bundle=bundle,
        split=split,
        method=method,
        checkpoint=Path(checkpoint),
    )


__all__ = [
    "ALL_POISONED",
    "MethodChoice",
    "Task",
    "build_method",
    "check_seed",
    "ledger_task",
    "prepare_method",
    "resolve_run_task",
    "resolve_unlearn_task",
    "restrict_to_deletable",
    "split_kind",
]
