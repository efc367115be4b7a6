"""`evaluate`: score an unlearned model (and the original / retrained ones) and build its record.

`RunInfo` says what was run (method, config, seed, runtimes, the noise-floor model, extra models for audits);
`EvalOptions` says how to evaluate (metrics, audits, MIA flavour, batch size, a shared `EvaluationCache`).
Also here: the gaps to the retrained model, ToW, the noise floor, and `format_table` for printing a record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, IncompatibleError
from .cache import EvaluationCache
from .levels import applicable_audits, split_audits
from .metrics import AVG_GAP_BASE, METRICS, MIA_FLAVOURS, MetricOptions
from .records import build_record
from .suite import (
    DEFAULT_METRICS,
    ROLE_ORDER,
    EvaluationSuite,
    _check_classes,
    _unwrap,
    eval_datasets,
    metric_infos,
    resolve_selection,
)

if TYPE_CHECKING:
    from ..data import DatasetBundle, Split
    from ..oracle import TrainedModel
    from .ulira import UliraShadows

__all__ = ["EvalOptions", "RunInfo", "compute_gaps", "evaluate", "format_table", "noise_floor", "tow"]

ExtraModels = Mapping[str, "nn.Module | Sequence[nn.Module] | UliraShadows"]


@dataclass(frozen=True)
class RunInfo:
    """What was run, for the record: every field is optional.

    Attributes:
        method: method name; config: its config; seed: seed of the run (default: the split's seed).
        runtime_seconds: wall-clock of the unlearning run (§1.7, measured by the runner);
            runtime_setup_seconds its preprocessing part; runtime_update_seconds its update part
            (default: runtime − setup).
        retrain_seconds: wall-clock of training the retrained model (for ``speedup_vs_retrained``).
        noise_floor: the noise floor (float), or a second retrained model to compute it from (§7).
        extra_models: more models: single modules are evaluated as extra roles (e.g. ``retrained_2``);
            audits read lists (``unlearned_runs``, ``retrained_runs``, ``ceiling_runs``) and ``ulira``.
        model_name: architecture name for the record (default: from the model's config).
        retrained_split_sha256: split digest the retrained model was trained for; refused if it differs.
    """

    method: str | None = None
    config: Mapping[str, Any] | None = None
    seed: int | None = None
    runtime_seconds: float | None = None
    runtime_setup_seconds: float | None = None
    runtime_update_seconds: float | None = None
    retrain_seconds: float | None = None
    noise_floor: float | nn.Module | TrainedModel | None = None
    extra_models: ExtraModels | None = None
    model_name: str | None = None
    retrained_split_sha256: str | None = None


@dataclass(frozen=True)
class EvalOptions:
    """How to evaluate.

    Attributes:
        metrics: metric and audit names (default: the default suite; see `resolve_selection`).
        audits: audit level ``none`` | ``standard`` | ``strong`` and/or audit names (see
            `unlearnkit.evaluation.levels.resolve_audits`); ``None`` is ``standard`` (population MIAs, linear
            probe, CKA to retrained). Audits of a level that cannot run here (no retrained model, no extra
            models) are skipped and listed in ``evaluation_config.audits_skipped``; named ones are refused.
        audit_options: per-audit options, e.g. ``{"relearn_time": {"max_steps": 200}}``.
        mia_flavour: MIA number inside the Avg. Gap: ``svc_confidence`` (SalUn) or ``entropy_logreg`` (SFR-on).
        reproduce: reproduce published bugs (the m_entropy feature).
        batch_size: evaluation batch size.
        cache: an `EvaluationCache` shared by the calls of one benchmark (the same original and retrained
            models are then run and scored once); ``None`` remembers nothing.
    """

    metrics: Sequence[str] | str | None = None
    audits: str | Sequence[str] | None = None
    audit_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    mia_flavour: str = "svc_confidence"
    reproduce: bool = False
    batch_size: int = 1024
    cache: EvaluationCache | None = None


# ------------------------------------------------------------------------------------------- gaps etc.
def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def compute_gaps(
    unlearned: dict[str, Any], retrained: dict[str, Any], mia_flavour: str = "svc_confidence"
) -> dict[str, Any]:
    """|unlearned − retrained| for every shared metric with a gap, plus ``avg_gap_to_retrained`` (§1.5)."""
    gaps: dict[str, Any] = {}
    infos = metric_infos()
    for k, v in unlearned.items():
        info = infos.get(k)
        if info is None or not info.gap or k not in retrained:
            continue
        if _is_num(v) and _is_num(retrained[k]):
            gaps[k] = abs(float(v) - float(retrained[k]))
    keys = (*AVG_GAP_BASE, MIA_FLAVOURS[mia_flavour])
    if all(k in gaps for k in keys):
        gaps["avg_gap_to_retrained"] = float(np.mean([gaps[k] for k in keys]))
    return gaps


def tow(unlearned: dict[str, Any], retrained: dict[str, Any]) -> float:
    """ToW (§1.8): Π over FA, RA, TA of (1 − |Δ|) with accuracies as fractions."""
    return float(np.prod([1 - abs(unlearned[k] - retrained[k]) / 100.0 for k in AVG_GAP_BASE]))


def noise_floor(
    retrained_a: nn.Module | TrainedModel,
    retrained_b: nn.Module | TrainedModel,
    bundle: DatasetBundle,
    split: Split,
    device: str | torch.device = "auto",
    *,
    mia_flavour: str = "svc_confidence",
    batch_size: int = 1024,
    cache: EvaluationCache | None = None,
) -> float:
    """Avg. Gap between two retrained models of different seeds (§7): gaps smaller than this are noise."""
    from ..device import resolve_device

    a, _ = _unwrap(retrained_a, "retrained")
    b, _ = _unwrap(retrained_b, "retrained_2")
    if a is None or b is None:
        raise ConfigError("noise_floor needs two retrained models")
    datasets = eval_datasets(bundle, split)
    suite = EvaluationSuite(
        metrics=[m for m in DEFAULT_METRICS if not METRICS.get(m).needs_reference], batch_size=batch_size
    )
    dev = resolve_device(device)
    _check_classes({"retrained": a, "retrained_2": b}, bundle.info.num_classes)
    res = suite.run({"retrained": a, "unlearned": b}, datasets, split, dev, cache=cache)
    gaps = compute_gaps(res.metrics["unlearned"], res.metrics["retrained"], mia_flavour)
    if "avg_gap_to_retrained" not in gaps:
        raise ConfigError("the noise floor could not be computed (a gap metric is NaN)")
    return gaps["avg_gap_to_retrained"]


# --------------------------------------------------------------------------------------------- evaluate
@dataclass
class _Models:
    """The models of one `evaluate` call, sorted by how the suite uses them."""

    roles: dict[str, nn.Module]  # unlearned, original, retrained: the record's model roles
    singles: dict[str, nn.Module]  # single extra models, evaluated as more roles (e.g. retrained_2)
    lists: dict[str, Any]  # extra model lists and shadows, read by audits only
    retrained_meta: dict[str, Any]
    noise_floor: nn.Module | None  # a second retrained model to compute the noise floor from


def _collect_models(
    unlearned: nn.Module | TrainedModel,
    original: nn.Module | TrainedModel | None,
    retrained: nn.Module | TrainedModel | None,
    extra_models: ExtraModels | None,
    floor: float | nn.Module | TrainedModel | None,
) -> _Models:
    u, _ = _unwrap(unlearned, "unlearned")
    if u is None:
        raise ConfigError("evaluate needs the unlearned model")
    o, _ = _unwrap(original, "original")
    r, r_meta = _unwrap(retrained, "retrained")
    roles = {"unlearned": u}
    roles.update({k: m for k, m in (("original", o), ("retrained", r)) if m is not None})
    singles: dict[str, nn.Module] = {}
    lists: dict[str, Any] = {}
    for k, v in (extra_models or {}).items():
        if isinstance(v, nn.Module):
            if k in roles:
                raise ConfigError(f"extra_models key {k!r} clashes with a model role; use another name")
            singles[k] = v
        else:
            lists[k] = v
    nf_model = None
    if floor is not None and not isinstance(floor, (int, float)):
        nf_model, _ = _unwrap(floor, "noise-floor retrained")
        if r is None:
            raise ConfigError("computing the noise floor from a second retrained model needs retrained=")
    return _Models(roles, singles, lists, r_meta, nf_model)


def _check_retrained_split(models: _Models, split: Split, retrained_split_sha256: str | None) -> None:
    r = models.roles.get("retrained")
    want = (
        retrained_split_sha256
        or models.retrained_meta.get("split_sha256")
        or getattr(r, "unlearnkit_split_sha256", None)
    )
    if r is not None and want and want != split.sha256:
        raise IncompatibleError(
            f"the retrained model was trained for split {want[:12]}… but the evaluated split is "
            f"{split.sha256[:12]}… ({split.spec}, seed {split.seed}); retrain on this split "
            "(unlearnkit train --forget …) or evaluate the split it was made for"
        )


def evaluate(
    unlearned: nn.Module | TrainedModel,
    bundle: DatasetBundle,
    split: Split,
    *,
    original: nn.Module | TrainedModel | None = None,
    retrained: nn.Module | TrainedModel | None = None,
    device: str | torch.device = "auto",
    run: RunInfo | None = None,
    options: EvalOptions | None = None,
) -> dict[str, Any]:
    """Evaluate an unlearned model (and the original / retrained ones) and return a §8.2 record.

    Every model goes through the identical code path; each metric reads the same single forward pass per
    (model, split). All input checks run before any compute.

    Args:
        unlearned: the unlearned model θ_u.
        bundle: the `DatasetBundle` the models were trained on.
        split: the `Split` (forget / retain / test indices) that was unlearned.
        original: the original model θ_o (optional; gets the same metrics).
        retrained: the retrained oracle θ_r (a module or a `TrainedModel`; needed for gaps and KL/JS).
        device: ``auto``, ``cpu``, ``cuda`` …
        run: what was run (`RunInfo`: method, config, seed, runtimes, noise floor, extra models).
        options: how to evaluate (`EvalOptions`: metrics, audits, MIA flavour, batch size, cache).

    Returns:
        The record (a JSON-serialisable dict); write it with `unlearnkit.evaluation.write_record`.
    """
    run = run or RunInfo()
    options = options or EvalOptions()
    metrics, audits, mia_flavour = options.metrics, options.audits, options.mia_flavour
    batch_size, cache, seed = options.batch_size, options.cache, run.seed
    from ..device import resolve_device

    if mia_flavour not in MIA_FLAVOURS:
        raise ConfigError(f"mia_flavour must be one of {', '.join(MIA_FLAVOURS)}, got {mia_flavour!r}")
    streamed, audit_names, derived = resolve_selection(metrics)
    explicit = set()
    if metrics is not None:
        explicit = {n.strip() for n in (metrics.split(",") if isinstance(metrics, str) else metrics)}
    models = _collect_models(unlearned, original, retrained, run.extra_models, run.noise_floor)
    r = models.roles.get("retrained")
    level_audits, named_audits = split_audits(audits)
    named_audits = list(dict.fromkeys([*audit_names, *named_audits]))
    all_models = {**models.roles, **models.singles}
    level_audits, audits_skipped = applicable_audits(
        [a for a in level_audits if a not in named_audits], all_models, models.lists, split.is_classwise, all_models
    )
    audit_names = [*level_audits, *named_audits]

    # ---- checks before any compute
    datasets = eval_datasets(bundle, split)
    nf_role = {"noise-floor retrained": models.noise_floor} if models.noise_floor is not None else {}
    _check_classes({**models.roles, **models.singles, **nf_role}, bundle.info.num_classes)
    _check_retrained_split(models, split, run.retrained_split_sha256)
    suite = EvaluationSuite(
        metrics=streamed,
        audits=audit_names,
        metric_options=MetricOptions(reproduce=options.reproduce),
        audit_options=dict(options.audit_options),
        batch_size=batch_size,
    )
    plan = suite.plan({**models.roles, **models.singles}, split.is_classwise, models.lists, explicit, datasets)
    problems = list(plan.problems)
    if "tow_to_retrained" in derived and r is None:
        problems.append("tow_to_retrained needs the retrained model")
    if problems:
        raise IncompatibleError(problems)
    dev = resolve_device(device)

    # ---- compute
    seed = split.seed if seed is None else seed
    t0 = time.perf_counter()
    res = suite.run(
        {**models.roles, **models.singles},
        datasets,
        split,
        dev,
        seed=seed,
        extra_models=models.lists,
        train_set=bundle.train,
        plan=plan,
        cache=cache,
    )
    eval_seconds = time.perf_counter() - t0
    gaps: dict[str, Any] = {}
    if r is not None:
        gaps = compute_gaps(res.metrics["unlearned"], res.metrics["retrained"], mia_flavour)
        if "tow_to_retrained" in derived:
            res.metrics["unlearned"]["tow_to_retrained"] = tow(res.metrics["unlearned"], res.metrics["retrained"])
    nf = None
    if isinstance(run.noise_floor, (int, float)) and not isinstance(run.noise_floor, bool):
        nf = float(run.noise_floor)
    elif models.noise_floor is not None and r is not None:
        nf = noise_floor(
            r, models.noise_floor, bundle, split, dev, mia_flavour=mia_flavour, batch_size=batch_size, cache=cache
        )
    timing = dict(res.timing, total_seconds=eval_seconds)
    return build_record(
        models=models.roles,
        singles=models.singles,
        result=res,
        gaps=gaps,
        bundle=bundle,
        split=split,
        device=dev,
        runtime_seconds=run.runtime_seconds,
        runtime_setup_seconds=run.runtime_setup_seconds,
        runtime_update_seconds=run.runtime_update_seconds,
        retrain_seconds=run.retrain_seconds,
        noise_floor=nf,
        method=run.method,
        config=dict(run.config) if run.config is not None else None,
        seed=seed,
        mia_flavour=mia_flavour,
        reproduce=options.reproduce,
        streamed=[c.name for c in plan.metrics],
        audits=audit_names,
        timing=timing,
        model_name=run.model_name,
        infos=metric_infos(),
        audits_skipped=audits_skipped,
    )


# ------------------------------------------------------------------------------------------- printing
def format_table(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``metric | original | retrained | unlearned | gap`` of a record, for printing (floats or "–")."""
    models = record.get("models", {})
    gaps = record.get("gaps_to_retrained", {})
    keys: list[str] = []
    for role in ROLE_ORDER:
        for k, v in models.get(role, {}).get("metrics", {}).items():
            if k not in keys and not isinstance(v, (list, tuple, dict)):  # per-class lists go to the report
                keys.append(k)
    infos = metric_infos()
    order = {k: i for i, k in enumerate(infos)}
    keys.sort(key=lambda k: order.get(k, len(order)))

    def cell(v: Any) -> Any:
        return float(v) if _is_num(v) else ("–" if v is None else str(v))

    rows = []
    for k in keys:
        info = infos.get(k)
        unit = f" ({info.unit})" if info and info.unit not in ("-", "") else ""
        rows.append(
            {
                "metric": k + unit,
                **{role: cell(models.get(role, {}).get("metrics", {}).get(k)) for role in ROLE_ORDER},
                "gap": cell(gaps.get(k)),
            }
        )
    if "avg_gap_to_retrained" in gaps:
        rows.append(
            {
                "metric": "avg_gap_to_retrained (pp)",
                "original": "–",
                "retrained": 0.0,
                "unlearned": cell(gaps["avg_gap_to_retrained"]),
                "gap": "–",
            }
        )
    if record.get("noise_floor_avg_gap") is not None:
        rows.append(
            {
                "metric": "noise_floor_avg_gap (pp)",
                "original": "–",
                "retrained": "–",
                "unlearned": cell(record["noise_floor_avg_gap"]),
                "gap": "–",
            }
        )
    return rows
