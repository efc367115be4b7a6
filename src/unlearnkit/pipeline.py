"""One unlearning experiment end to end: original and retrained oracle (cached), unlearn, evaluate.

`run_experiment` is what `unlearnkit run`, `unlearnkit demo` and the benchmark runner call. Every check runs
before any compute: names, forget spec, method config and method × split compatibility.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ._io import write_dir_atomic
from .cache import model_sha256
from .data import load_dataset, parse_forget_spec, split_for
from .data.splits import Split
from .device import resolve_device
from .errors import IncompatibleError
from .methods import METHODS, Method, UnlearnData, create_method, preset_config
from .models import (
    MODELS,
    checkpoint_info,
    create_model,
    load_into,
    load_model,
    read_checkpoint,
    save_model,
    validate_kwargs,
)
from .oracle import train_or_load
from .runner import run_method

if TYPE_CHECKING:
    from .evaluation import EvaluationCache

NOISE_FLOOR_SEED_OFFSET = 1000


@dataclass
class Experiment:
    record: dict[str, Any]
    unlearned: nn.Module
    split: Split


def split_kind(spec: str) -> str:
    return "class" if parse_forget_spec(spec).kind == "class" else "random"


def prepare_method(
    method: str,
    dataset: str,
    model: str,
    forget: str,
    overrides: dict[str, Any] | None = None,
    preset: str | None = None,
) -> Method:
    """Resolve presets + overrides into a validated method (raises before any compute)."""
    kind = split_kind(forget)
    cls = METHODS.get(method)
    if kind not in cls.requires.split_kinds:
        label = "poisoned-sample" if parse_forget_spec(forget).kind == "poisoned" else kind
        raise IncompatibleError(
            f"method {METHODS.canonical(method)!r} supports only "
            f"{'/'.join(sorted(cls.requires.split_kinds))} forgetting, not {label} ({forget!r})"
        )
    values = dict(overrides or {})
    _, source = preset_config(method, dataset, model, kind, preset)
    untuned = source.startswith(("default", "class defaults"))
    if untuned and "stop_at_target" in cls.Config.field_names() and "stop_at_target" not in values:
        # No preset was tuned for this (dataset, model, kind): stop by the rule that needs no retrained model.
        values["stop_at_target"] = True
    return create_method(method, dataset=dataset, model=model, kind=kind, preset=preset, **values)


def run_experiment(
    dataset: str,
    model: str,
    forget: str,
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
) -> Experiment:
    """Run one (dataset, model, forget spec, method, seed) experiment and return its record and model.

    ``eval_cache`` is shared by the runs of one benchmark (see `unlearnkit.evaluation.EvaluationCache`).
    ``manipulation`` (e.g. ``badnets:rate=0.05,value=1``, see `unlearnkit.data.manipulations`) manipulates the
    training data under ``seed`` first: the original learns it, and for ``poisoned`` forget specs the retrained
    oracle is trained on the clean remainder (every manipulated sample removed, known to the defender or not).
    ``audits`` is an audit level (``none`` | ``standard``, the default | ``strong``) and/or audit names
    (`unlearnkit.evaluation.levels.resolve_audits`); ``oracles`` = K ≥ 3 trains K retrained oracles (cached)
    for the oracle-distribution margin score. The extra models strong audits need are trained through the model
    cache after a cost estimate is printed (`unlearnkit.audit_models`).
    """
    from .audit_models import plan_audit_models
    from .data.manipulations import parse_manipulation
    from .evaluation import evaluate
    from .evaluation.levels import resolve_audits

    MODELS.get(model)
    manip = parse_manipulation(manipulation)
    if parse_forget_spec(forget).kind == "poisoned" and manip is None:
        from .errors import ConfigError

        raise ConfigError(f"forget spec {forget!r} needs manipulated data: pass --manipulation (manipulation=)")
    check_seed(seed)
    m = prepare_method(method, dataset, model, forget, overrides, preset)
    audit_items = (audits.split(",") if isinstance(audits, str) else list(audits)) if audits else ["standard"]
    if oracles and "oracle_margins" not in resolve_audits(audit_items):
        audit_items.append("oracle_margins")
    plan_audit_models(resolve_audits(audit_items), oracles)  # bad audit names or K fail here, before any compute
    if metrics:
        from .evaluation import resolve_selection

        resolve_selection(metrics)  # a typo in a metric name fails here, not after unlearning
    model_kwargs = dict(model_kwargs or {})
    validate_kwargs(MODELS.canonical(model), model_kwargs)
    dev = resolve_device(device)
    bundle = load_dataset(dataset, data_dir)
    if manip is not None:
        bundle = manipulate(bundle, manip, seed, model=model, model_kwargs=model_kwargs, device=dev, progress=progress)
    split = split_for(bundle, forget, seed)
    # corrective setting: the oracle never saw any manipulated sample, whatever part the defender knows
    oracle_split = split_for(bundle, "poisoned", seed) if split.kind == "poisoned" else split

    if original_path:
        original = load_original(original_path, model, bundle, model_kwargs, dev)
        original_meta: dict[str, Any] = {"source": Path(original_path).name}
    else:
        t = train_or_load(bundle, model, None, seed=seed, model_kwargs=model_kwargs, device=dev, progress=progress)
        original, original_meta = t.model, t.meta
    retrained = train_or_load(
        bundle, model, oracle_split, seed=seed, model_kwargs=model_kwargs, device=dev, progress=progress
    )
    second = None
    if noise_floor:
        second = train_or_load(
            bundle,
            model,
            oracle_split,
            seed=seed + NOISE_FLOOR_SEED_OFFSET,
            model_kwargs=model_kwargs,
            device=dev,
            progress=progress,
        ).model

    data = replace(
        UnlearnData.from_split(bundle, split), original_weight_decay=recipe_weight_decay(original_meta.get("recipe"))
    )
    result = run_method(m, original, data, device=dev, seed=seed, progress=progress)
    unlearned, runtime = result.model, result.seconds

    extra_models = _audit_models(
        audit_items, oracles, m, bundle, model, split, oracle_split, original, retrained, unlearned, second, seed,
        model_kwargs, dev, progress, runtime,
    )  # fmt: skip
    _, preset_source = preset_config(method, bundle.info.name, model, split_kind(forget), preset)
    record = evaluate(
        unlearned,
        bundle,
        split,
        original=original,
        retrained=retrained.model,
        metrics=metrics,
        device=dev,
        runtime_seconds=runtime,
        runtime_setup_seconds=result.setup_seconds,
        runtime_update_seconds=result.update_seconds,
        retrain_seconds=retrained.meta.get("wall_seconds"),
        noise_floor=second,
        method=METHODS.canonical(method),
        config=m.config.to_dict(),
        seed=seed,
        cache=eval_cache,
        audits=audit_items,
        extra_models=extra_models or None,
    )
    record.setdefault("method", {})["preset"] = preset_source
    record["method"]["stop_reason"] = result.stop_reason
    record["model"]["kwargs"] = model_kwargs
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
    from .data.manipulations import DEFAULT_PAIRS, Confusion, apply, parse_manipulation

    m = parse_manipulation(manipulation)
    clean = None
    if isinstance(m, Confusion) and m.a is None and bundle.info.name not in DEFAULT_PAIRS:
        clean = train_or_load(
            bundle, model, None, seed=seed, model_kwargs=model_kwargs, device=device, progress=progress
        )
    return apply(bundle, m, seed, model=clean.model if clean else None, device=device)[0]


def _audit_models(
    audit_items: list[str],
    oracles: int,
    method: Method,
    bundle: Any,
    model: str,
    split: Split,
    oracle_split: Split,
    original: nn.Module,
    retrained: Any,
    unlearned: nn.Module,
    second: nn.Module | None,
    seed: int,
    model_kwargs: dict[str, Any],
    device: Any,
    progress: bool | None,
    runtime: float,
) -> dict[str, Any]:
    """The extra models the selected audits need (strong level, ``oracles``); the cost is printed first."""
    import sys

    from .audit_models import build_audit_models, plan_audit_models
    from .evaluation.levels import resolve_audits

    plan = plan_audit_models(
        resolve_audits(audit_items),
        oracles,
        method_kinds=sorted(type(method).requires.split_kinds),
        train_seconds=retrained.meta.get("wall_seconds"),
        unlearn_seconds=runtime,
    )
    if not (plan.oracles or plan.unlearned_runs or plan.shadows):
        return {}
    print(f"unlearnkit: {plan.describe()}", file=sys.stderr)
    for note in plan.notes:
        print(f"unlearnkit: {note}", file=sys.stderr)
    return build_audit_models(
        plan,
        bundle=bundle,
        model=model,
        split=split,
        oracle_split=oracle_split,
        method=method,
        original=original,
        retrained=retrained.model,
        unlearned=unlearned,
        noise_floor_model=second,
        seed=seed,
        model_kwargs=model_kwargs,
        device=device,
        progress=progress,
    )


def load_original(
    path: str | Path, model: str, bundle: Any, model_kwargs: dict[str, Any], device: Any = "cpu"
) -> nn.Module:
    """Load the user's ``--original`` checkpoint after checking it against ``--model``/``--dataset``.

    Refused: a retrained oracle (role stored in the file), a checkpoint of another training set (split digest),
    another architecture, input size, channel count or class count. A plain state dict (``.pt`` or a safetensors
    file without our metadata) is loaded into ``--model`` built for the dataset.
    """
    from .errors import CheckpointError

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


def check_seed(seed: Any, flag: str = "seed") -> int:
    """A seed must be an integer in [0, 2^63): numpy and torch refuse others deep inside the compute."""
    from .errors import ConfigError

    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ConfigError(f"{flag} must be an integer in [0, 2^63), got {seed!r}")
    return seed


def save_experiment(exp: Experiment, out: str | Path) -> Path:
    """Write record.json, unlearned.safetensors and split.json into ``out``, all or nothing.

    The files go into a temporary sibling folder first and are moved into place at the end (record.json last),
    so a crash or a full disk leaves the previous state or the whole result. The weights carry the role
    ("unlearned") and the split digest in their metadata, which `unlearnkit eval` reads.
    """
    from .evaluation import write_record
    from .models import DATASET_KEY, ROLE_KEY, SPLIT_KEY

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
