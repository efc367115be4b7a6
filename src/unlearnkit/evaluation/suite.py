"""`EvaluationSuite`: one forward pass per (model, split), shared by every metric (`evaluate` is in `.api`).

A suite run is plan → forward → compute: `EvaluationSuite.plan` decides which models × splits need a forward
pass and which metrics and audits run; each model's forward pass per split (the retrained model first, its
outputs are the reference) streams every batch of logits into all metrics at once (evaluation.md §8.0); then
the metrics compute their values and the audits read the logits / features kept for them. Nothing is remembered
between calls unless an `EvaluationCache` is passed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import takewhile
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..cache import model_sha256
from ..errors import ConfigError, DivergenceError, IncompatibleError
from .audits import AUDITS, Audit, AuditContext
from .cache import Batch, EvaluationCache, ForwardKey, ValuesKey
from .levels import EXTRA_HELP
from .metrics import (
    DERIVED_KEYS,
    EVAL_SPLITS,
    METRICS,
    MIA_FLAVOURS,
    Metric,
    MetricInfo,
    MetricOptions,
    Outputs,
)

if TYPE_CHECKING:
    from ..data import ImageDataset, Split

__all__ = [
    "DEFAULT_METRICS",
    "MIA_FLAVOURS",
    "EvaluationSuite",
    "SuitePlan",
    "eval_datasets",
    "metric_infos",
    "resolve_selection",
]

ROLE_ORDER = ("original", "retrained", "unlearned")


def _default_metrics() -> list[str]:
    return [n for n in METRICS.names() if METRICS.get(n).default]


DEFAULT_METRICS = tuple(_default_metrics())
DERIVED_SELECTABLE = ("tow_to_retrained",)


def _section_key(info: MetricInfo) -> tuple[tuple[int, str], ...]:
    """``"1.4b"`` → ``((1, "1"), (4, "4b"))``: numeric section order, ``1.4 < 1.4b < 1.5``."""
    return tuple((int("".join(takewhile(str.isdigit, p)) or 0), p) for p in info.section.split("."))


def metric_infos() -> dict[str, MetricInfo]:
    """Metadata of every key a record can hold, in evaluation.md section order: the registered metrics, the
    derived keys (`DERIVED_KEYS`) and the outputs of the registered audits."""
    infos = [
        *(METRICS.get(n).info() for n in METRICS.names()),
        *DERIVED_KEYS,
        *(o for n in AUDITS.names() for o in AUDITS.get(n).outputs),
    ]
    return {i.name: i for i in sorted(infos, key=_section_key)}


def resolve_selection(metrics: Sequence[str] | str | None) -> tuple[list[str], list[str], list[str]]:
    """Split a selection into (streamed metrics, audits, derived keys).

    ``None`` is the default suite. Named metrics, audits and ``tow_to_retrained`` are added to the default
    suite; ``-name`` removes a metric (e.g. ``-mia_efficacy_forget`` skips the SVC fit); ``default`` is
    accepted and means the default suite. Unknown names raise `UnknownNameError` with suggestions.
    """
    if metrics is None:
        return list(DEFAULT_METRICS), [], []
    names = [n.strip() for n in (metrics.split(",") if isinstance(metrics, str) else metrics) if n and n.strip()]
    streamed: list[str] = list(DEFAULT_METRICS)
    audits: list[str] = []
    derived: list[str] = []
    removed: set[str] = set()
    for raw in names:
        drop = raw.startswith("-")
        n = raw[1:] if drop else raw
        if n == "default":
            continue
        if n in DERIVED_SELECTABLE:
            (removed.add(n) if drop else derived.append(n))
        elif n in AUDITS:
            (removed.add(AUDITS.canonical(n)) if drop else audits.append(AUDITS.canonical(n)))
        elif n in METRICS:
            (removed.add(METRICS.canonical(n)) if drop else streamed.append(METRICS.canonical(n)))
        else:
            if n in metric_infos():
                raise ConfigError(
                    f"{n!r} is computed by the default suite or an audit and cannot be selected on its "
                    "own; see `unlearnkit list metrics`"
                )
            METRICS.get(n)  # raises UnknownNameError with did-you-mean
    keep = [x for x in dict.fromkeys(streamed) if x not in removed]
    return keep, [a for a in dict.fromkeys(audits) if a not in removed], [d for d in derived if d not in removed]


# --------------------------------------------------------------------------------------- data and models
def eval_datasets(bundle: Any, split: Any) -> dict[str, Any]:
    """The evaluation splits: forget, retain, test (remaining classes when class-wise), test_forgotten_classes.

    Raises `ConfigError` when the split does not belong to ``bundle`` or a needed split is empty.
    """
    info = bundle.info
    if split.dataset != info.name:
        raise ConfigError(
            f"the split was made for dataset {split.dataset!r}, not {info.name!r}; make the split "
            "with split_for(bundle, spec, seed)"
        )
    if split.num_train != len(bundle.train):
        raise ConfigError(
            f"the split indexes a training set of {split.num_train} images but the dataset has "
            f"{len(bundle.train)}; make the split for this dataset"
        )
    for name, idx, n in (
        ("forget", split.forget, len(bundle.train)),
        ("retain", split.retain, len(bundle.train)),
        ("test", split.test, len(bundle.test)),
    ):
        if len(idx) == 0:
            raise ConfigError(
                f"the {name} set of split {split.spec!r} is empty; evaluation needs non-empty forget, "
                "retain and test sets (pass a forget spec such as class:0 or random:0.1)"
            )
        if idx.min() < 0 or idx.max() >= n:
            raise ConfigError(f"{name} index {int(idx.max())} is outside the dataset ({n} images)")
    test = bundle.test.subset(split.test)
    out = {"forget": bundle.train.subset(split.forget), "retain": bundle.train.subset(split.retain)}
    if split.is_classwise:
        mask = np.isin(test.targets.numpy(), list(split.forget_classes))
        out["test"] = test.subset(np.flatnonzero(~mask))
        out["test_forgotten_classes"] = test.subset(np.flatnonzero(mask))
        if len(out["test"]) == 0:
            raise ConfigError("no test image belongs to a remaining class; accuracy_test would be empty")
    else:
        out["test"] = test
    from ..data.manipulations import manipulation_eval_sets

    out.update(manipulation_eval_sets(bundle, split.test))  # nothing for clean data
    return out


def _unwrap(obj: Any, role: str) -> tuple[nn.Module | None, dict[str, Any]]:
    """A module, or a `TrainedModel`-like object with ``.model`` and ``.meta``."""
    if obj is None:
        return None, {}
    if isinstance(obj, nn.Module):
        return obj, {}
    if hasattr(obj, "model") and isinstance(obj.model, nn.Module):
        return obj.model, dict(getattr(obj, "meta", {}) or {})
    raise ConfigError(f"the {role} model must be a torch.nn.Module (or a TrainedModel), got {type(obj).__name__}")


def _num_outputs(model: nn.Module) -> int | None:
    from ..models import num_outputs

    return num_outputs(model)


# ------------------------------------------------------------------------------------------- the suite
@dataclass
class SuiteResult:
    metrics: dict[str, dict[str, Any]]
    diagnostics: dict[str, dict[str, Any]]
    extras: dict[str, Any]
    timing: dict[str, Any]


@dataclass(frozen=True)
class SuitePlan:
    """What one suite run computes, decided before any forward pass (`EvaluationSuite.plan`).

    Attributes:
        roles: models in evaluation order; the retrained model first, its outputs are the reference.
        metrics: the streamed metrics that can run.
        audits: the selected audits.
        splits: splits that need a forward pass, in ``EVAL_SPLITS`` order.
        reference_splits: splits on which the retrained model's logits are kept for reference metrics.
        logit_splits: splits on which every model's logits are kept for audits.
        feature_splits: splits on which penultimate features are kept for audits.
        problems: missing requirements of explicitly selected metrics and of audits (empty: the plan can run).
    """

    roles: tuple[str, ...]
    metrics: tuple[type[Metric], ...]
    audits: tuple[Audit, ...]
    splits: tuple[str, ...]
    reference_splits: frozenset[str]
    logit_splits: frozenset[str]
    feature_splits: frozenset[str]
    problems: tuple[str, ...] = ()


@dataclass
class _Timing:
    forward: float = 0.0
    update: float = 0.0
    compute: dict[str, float] = field(default_factory=dict)
    audit: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "forward_seconds": self.forward,
            "update_seconds": self.update,
            "compute_seconds": self.compute,
            "audit_seconds": self.audit,
        }


@dataclass
class _Kept:
    """Outputs kept beyond their batch: the reference model's logits, and logits / features for audits."""

    reference: dict[str, np.ndarray] = field(default_factory=dict)
    logits: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    features: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


@dataclass
class EvaluationSuite:
    """A set of streamed metrics and audits evaluated with one forward pass per (model, split).

    Args:
        metrics: streamed metric names (default: the default suite).
        audits: audit names (off by default).
        metric_options: options of every metric (`MetricOptions` or a mapping of its fields, e.g.
            ``{"reproduce": True}`` for the buggy m_entropy); an unknown key raises `ConfigError`.
        audit_options: per-audit options, e.g. ``{"relearn_time": {"max_steps": 200}}``; an unknown audit or
            option name raises.
        batch_size: evaluation batch size (BatchNorm is in eval mode, so it does not change results).
    """

    metrics: Sequence[str] = DEFAULT_METRICS
    audits: Sequence[str] = ()
    metric_options: MetricOptions | Mapping[str, Any] = field(default_factory=MetricOptions)
    audit_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_size: int = 1024

    def __post_init__(self) -> None:
        self.metric_options = MetricOptions.coerce(self.metric_options)
        for name, options in self.audit_options.items():
            AUDITS.get(name).check_options(options)

    # ------------------------------------------------------------------------------------------ plan
    def plan(
        self,
        roles: Iterable[str],
        classwise: bool,
        extra_models: Mapping[str, Any] | None = None,
        explicit: Iterable[str] = (),
        available: Iterable[str] | None = None,
    ) -> SuitePlan:
        """Which models × splits need a forward pass and which metrics and audits run.

        Metrics whose requirements are missing are dropped; every missing requirement of an ``explicit``ly
        selected metric or of an audit is reported at once in ``problems``. ``available`` (the evaluation sets
        at hand) drops metrics reading another set, e.g. the backdoor ones on clean data.
        """
        roles = set(roles)
        explicit = set(explicit)
        problems: list[str] = []
        runnable = []
        for cls in (METRICS.get(n) for n in self.metrics):
            if cls.classwise_only and not classwise:
                if cls.name in explicit:
                    problems.append(f"metric {cls.name} needs class-wise forgetting (forget spec class:…)")
                continue
            if cls.needs_reference and "retrained" not in roles:
                if cls.name in explicit:
                    problems.append(f"metric {cls.name} needs the retrained model (pass retrained=)")
                continue
            missing = sorted(cls.needs - set(available)) if available is not None else []
            if missing:
                if cls.name in explicit:
                    problems.append(
                        f"metric {cls.name} needs the {', '.join(missing)} set(s): manipulated training data "
                        "(--manipulation badnets:… or confusion:…)"
                    )
                continue
            runnable.append(cls)
        audits = tuple(AUDITS.get(name) for name in self.audits)
        for a in audits:
            problems += [f"audit {a.name} needs the {r} model (pass {r}=)" for r in sorted(a.needs_models - roles)]
            problems += [
                f"audit {a.name} needs extra_models[{e!r}]: {EXTRA_HELP.get(e, 'pass it to evaluate')}"
                for e in a.needs_extra
                if not (extra_models or {}).get(e)
            ]
            if a.classwise_only and not classwise:
                problems.append(f"audit {a.name} needs class-wise forgetting")
        logit_splits = frozenset().union(*(a.needs_logits for a in audits))
        feature_splits = frozenset().union(*(a.needs_features for a in audits))
        needed = frozenset().union(*(c.needs for c in runnable), logit_splits, feature_splits)
        order = sorted(roles, key=lambda r: (r != "retrained", ROLE_ORDER.index(r) if r in ROLE_ORDER else 99, r))
        return SuitePlan(
            roles=tuple(order),
            metrics=tuple(runnable),
            audits=audits,
            splits=tuple(s for s in EVAL_SPLITS if s in needed and (classwise or s != "test_forgotten_classes")),
            reference_splits=frozenset().union(*(c.needs for c in runnable if c.needs_reference)),
            logit_splits=logit_splits,
            feature_splits=feature_splits,
            problems=tuple(problems),
        )

    # ------------------------------------------------------------------------------------------- run
    def run(
        self,
        models: Mapping[str, nn.Module],
        datasets: Mapping[str, ImageDataset],
        split: Split,
        device: torch.device,
        *,
        seed: int = 0,
        extra_models: Mapping[str, Any] | None = None,
        train_set: ImageDataset | None = None,
        plan: SuitePlan | None = None,
        cache: EvaluationCache | None = None,
    ) -> SuiteResult:
        """Evaluate ``models`` (role → module) on ``datasets``: plan, then per model a forward pass per split
        streamed into every metric, then the metric values, then the audits. ``cache`` remembers forward
        outputs and metric values across calls (``None``: nothing is remembered)."""
        plan = plan or self.plan(models, split.is_classwise, available=datasets)
        timing, kept = _Timing(), _Kept()
        values: dict[str, dict[str, Any]] = {}
        diags: dict[str, dict[str, Any]] = {}
        options = replace(MetricOptions.coerce(self.metric_options), retain_limit=len(datasets["test"]))
        ref_sha: str | None = None
        for role in plan.roles:
            model = models[role]
            msha = model_sha256(model)
            metrics = [cls(options) for cls in plan.metrics]
            for s in plan.splits:
                if s in datasets:
                    batches = self._forward(model, msha, datasets[s], s, split, device, plan, cache)
                    _feed(role, s, _timed(batches, timing), metrics, plan, kept)
            if role == "retrained":
                ref_sha = msha
            key = self._values_key(role, msha, ref_sha, plan, datasets, split, device)
            values[role], diags[role] = _compute(metrics, key, cache, timing)
        extras: dict[str, Any] = {}
        if plan.audits:
            ctx = AuditContext(
                models=dict(models),
                datasets=dict(datasets),
                split=split,
                device=device,
                seed=seed,
                logits=kept.logits,
                features=kept.features,
                extra_models=dict(extra_models or {}),
                batch_size=self.batch_size,
                train_set=train_set,
            )
            extras = _run_audits(plan.audits, ctx, self.audit_options, values, diags, timing)
        return SuiteResult(values, diags, extras, timing.as_dict())

    def _forward(
        self,
        model: nn.Module,
        msha: str,
        ds: ImageDataset,
        part: str,
        split: Split,
        device: torch.device,
        plan: SuitePlan,
        cache: EvaluationCache | None,
    ) -> Iterator[Batch]:
        """The forward pass of one model on one split part, from ``cache`` when it holds it."""
        want_feats = part in plan.feature_splits and hasattr(model, "forward_features") and hasattr(model, "head")
        if cache is None:
            return _forward(model, ds, device, self.batch_size, want_feats)
        key = (msha, getattr(split, "sha256", None) or id(ds), part, self.batch_size, want_feats, str(device))
        return _forward_cached(cache, key, model, ds, device, self.batch_size, want_feats)

    def _values_key(
        self,
        role: str,
        msha: str,
        ref_sha: str | None,
        plan: SuitePlan,
        datasets: Mapping[str, ImageDataset],
        split: Split,
        device: torch.device,
    ) -> ValuesKey | None:
        split_sha = getattr(split, "sha256", None)
        if split_sha is None:  # without a split digest there is nothing safe to key on
            return None
        needs_ref = role != "retrained" and any(c.needs_reference for c in plan.metrics)
        options = repr(MetricOptions.coerce(self.metric_options))
        return (
            msha,
            ref_sha if needs_ref else None,
            split_sha,
            tuple(s for s in EVAL_SPLITS if s in datasets),
            tuple(c.name for c in plan.metrics),
            options,
            len(datasets["test"]),
            str(device),
        )


# ----------------------------------------------------------------------------------- forward and compute
def _timed(batches: Iterator[Batch], timing: _Timing) -> Iterator[Batch]:
    """``batches``, adding the time spent producing each to ``timing.forward`` and consuming it to ``.update``."""
    t0 = time.perf_counter()
    for item in batches:
        t1 = time.perf_counter()
        timing.forward += t1 - t0
        yield item
        t0 = time.perf_counter()
        timing.update += t0 - t1


def _feed(role: str, part: str, batches: Iterable[Batch], metrics: list[Metric], plan: SuitePlan, kept: _Kept) -> None:
    """Stream one model's batches on one split part into every metric; keep what references and audits read."""
    keep_logits = (role == "retrained" and part in plan.reference_splits) or part in plan.logit_splits
    chunks_l, chunks_y, chunks_f = [], [], []
    offset = 0
    for logits, labels, feats in batches:
        if not np.isfinite(logits).all():
            bad = int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0]) + offset
            raise DivergenceError(
                f"the {role} model produces non-finite logits on the {part} set (sample {bad}); the "
                "model diverged — check the method's learning rate or the checkpoint"
            )
        out = Outputs(logits, labels, offset)
        ref = None
        if role != "retrained" and part in kept.reference:
            ref = Outputs(kept.reference[part][offset : offset + len(labels)], labels, offset)
        elif role == "retrained" and part in plan.reference_splits:
            ref = out
        for m in metrics:
            if part in m.needs:
                m.update(part, out, ref if m.needs_reference else None)
        if keep_logits:
            chunks_l.append(logits)
            chunks_y.append(labels)
        if feats is not None:
            chunks_f.append(feats)
        offset += len(labels)
    if chunks_l:
        cat = np.concatenate(chunks_l)
        if role == "retrained" and part in plan.reference_splits:
            kept.reference[part] = cat
        if part in plan.logit_splits:
            kept.logits[(role, part)] = (cat, np.concatenate(chunks_y))
    if chunks_f:
        kept.features[(role, part)] = np.concatenate(chunks_f)


def _compute(
    metrics: list[Metric], key: ValuesKey | None, cache: EvaluationCache | None, timing: _Timing
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(values, diagnostics) of one model's metrics, from ``cache`` when it holds ``key``."""
    if cache is not None and key is not None:
        hit = cache.values(key)
        if hit is not None:
            return hit
    vals: dict[str, Any] = {}
    dg: dict[str, Any] = {}
    for m in metrics:
        t0 = time.perf_counter()
        for k, v in m.compute().items():
            (dg if k.endswith("_degenerate") else vals)[k] = v
        timing.compute[m.name] = timing.compute.get(m.name, 0.0) + time.perf_counter() - t0
    if cache is not None and key is not None:
        cache.put_values(key, (vals, dg))
    return vals, dg


def _run_audits(
    audits: Sequence[Audit],
    ctx: AuditContext,
    options: Mapping[str, Mapping[str, Any]],
    values: dict[str, dict[str, Any]],
    diags: dict[str, dict[str, Any]],
    timing: _Timing,
) -> dict[str, Any]:
    """Run every audit; per-model outputs go into ``values`` (``*_censored`` into ``diags``); returns the extras."""
    extras: dict[str, Any] = {}
    for a in audits:
        ctx.options = dict(options.get(a.name, {}))
        t0 = time.perf_counter()
        res = a.fn(ctx)
        timing.audit[a.name] = time.perf_counter() - t0
        for role, kv in res.get("per_model", {}).items():
            for k, v in kv.items():
                (diags if k.endswith("_censored") else values).setdefault(role, {})[k] = v
        extras[a.name] = res.get("extras", {})
    return extras


def _forward_cached(
    cache: EvaluationCache,
    key: ForwardKey,
    model: nn.Module,
    ds: ImageDataset,
    device: torch.device,
    batch_size: int,
    want_features: bool,
) -> Iterator[Batch]:
    """`_forward`, answered from ``cache`` when it holds ``key``; a complete pass is stored there."""
    hit = cache.forward(key)
    if hit is not None:
        yield from hit
        return
    chunks = []
    for item in _forward(model, ds, device, batch_size, want_features):
        chunks.append(item)
        yield item
    cache.put_forward(key, chunks)


@torch.inference_mode()
def _forward(
    model: nn.Module, ds: ImageDataset, device: torch.device, batch_size: int, want_features: bool
) -> Iterator[Batch]:
    from ..data.loading import iter_batches
    from ..models import memory_format

    was = model.training
    model.eval()
    fmt = memory_format(model)
    model.to(memory_format=fmt)  # type: ignore[call-overload]  # layout only: same values, ~3x faster on CPU
    try:
        for x, y in iter_batches(ds, batch_size, device=device):
            x = x.contiguous(memory_format=fmt)
            if want_features:
                f = model.forward_features(x)  # type: ignore[operator]
                z = model.head(f)  # type: ignore[operator]
                feats = f.flatten(1).float().cpu().numpy()
            else:
                z = model(x)
                feats = None
            yield z.float().cpu().numpy(), y.cpu().numpy(), feats
    finally:
        model.train(was)


def _check_classes(models: dict[str, nn.Module], num_classes: int) -> None:
    problems = []
    for role, m in models.items():
        k = _num_outputs(m)
        if k is not None and k != num_classes:
            problems.append(f"the {role} model has {k} outputs but the dataset has {num_classes} classes")
    if problems:
        raise IncompatibleError([*problems, "all models must be trained for the same dataset and classes"])
