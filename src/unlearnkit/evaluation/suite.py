"""`EvaluationSuite` (one forward pass per (model, split), shared by every metric) and `evaluate`.

The suite evaluates the retrained model first (its outputs on the splits that reference metrics need
are kept), then every other model with the identical code path, streaming each batch of logits into
all metrics at once (evaluation.md §8.0). Audits read the logits / features kept for them.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import math
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DivergenceError, IncompatibleError
from .audits import AUDITS, AuditContext
from .metrics import EVAL_SPLITS, KEY_META, METRICS, Metric, Outputs

__all__ = ["DEFAULT_METRICS", "MIA_FLAVOURS", "EvaluationSuite", "eval_datasets", "evaluate", "format_table",
           "noise_floor", "resolve_selection"]

MIA_FLAVOURS = {"svc_confidence": "mia_efficacy_forget", "entropy_logreg": "mia_member_rate_forget_entropy_logreg"}
AVG_GAP_BASE = ("accuracy_forget", "accuracy_retain", "accuracy_test")
ROLE_ORDER = ("original", "retrained", "unlearned")


def _default_metrics() -> list[str]:
    return [n for n in METRICS.names() if METRICS.get(n).default]


DEFAULT_METRICS = tuple(_default_metrics())
DERIVED_SELECTABLE = ("tow_to_retrained",)


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
            if n in KEY_META:
                raise ConfigError(f"{n!r} is computed by the default suite or an audit and cannot be selected on its "
                                  "own; see `unlearnkit list metrics`")
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
        raise ConfigError(f"the split was made for dataset {split.dataset!r}, not {info.name!r}; make the split "
                          "with split_for(bundle, spec, seed)")
    if split.num_train != len(bundle.train):
        raise ConfigError(f"the split indexes a training set of {split.num_train} images but the dataset has "
                          f"{len(bundle.train)}; make the split for this dataset")
    for name, idx, n in (("forget", split.forget, len(bundle.train)), ("retain", split.retain, len(bundle.train)),
                         ("test", split.test, len(bundle.test))):
        if len(idx) == 0:
            raise ConfigError(f"the {name} set of split {split.spec!r} is empty; evaluation needs non-empty forget, "
                              "retain and test sets (pass a forget spec such as class:0 or random:0.1)")
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


def model_sha256(model: nn.Module) -> str:
    """SHA-256 over the state dict (names, shapes, dtypes and bytes), independent of the device."""
    import hashlib

    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        t = v.detach().to("cpu").contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- the suite
@dataclass
class SuiteResult:
    metrics: dict[str, dict[str, Any]]
    diagnostics: dict[str, dict[str, Any]]
    extras: dict[str, Any]
    timing: dict[str, Any]


@dataclass
class EvaluationSuite:
    """A set of streamed metrics and audits evaluated with one forward pass per (model, split).

    Args:
        metrics: streamed metric names (default: the default suite).
        audits: audit names (off by default).
        metric_options: options passed to every metric (e.g. ``reproduce=True`` for the buggy m_entropy).
        audit_options: per-audit options, e.g. ``{"relearn_time": {"max_steps": 200}}``.
        batch_size: evaluation batch size (BatchNorm is in eval mode, so it does not change results).
    """

    metrics: Sequence[str] = DEFAULT_METRICS
    audits: Sequence[str] = ()
    metric_options: dict[str, Any] = field(default_factory=dict)
    audit_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    batch_size: int = 1024

    def _metric_classes(self) -> list[type[Metric]]:
        return [METRICS.get(n) for n in self.metrics]

    def plan(self, roles: Iterable[str], classwise: bool, extra_models: dict[str, Any] | None = None,
             explicit: Iterable[str] = ()) -> tuple[list[type[Metric]], list[str]]:
        """(metric classes that can run, problems): every missing requirement is reported at once."""
        roles = set(roles)
        explicit = set(explicit)
        problems: list[str] = []
        runnable = []
        for cls in self._metric_classes():
            if cls.classwise_only and not classwise:
                if cls.name in explicit:
                    problems.append(f"metric {cls.name} needs class-wise forgetting (forget spec class:…)")
                continue
            if cls.needs_reference and "retrained" not in roles:
                if cls.name in explicit:
                    problems.append(f"metric {cls.name} needs the retrained model (pass retrained=)")
                continue
            runnable.append(cls)
        for name in self.audits:
            a = AUDITS.get(name)
            for r in sorted(a.needs_models - roles):
                problems.append(f"audit {name} needs the {r} model (pass {r}=)")
            for e in a.needs_extra:
                if not (extra_models or {}).get(e):
                    problems.append(f"audit {name} needs extra_models[{e!r}]")
            if a.classwise_only and not classwise:
                problems.append(f"audit {name} needs class-wise forgetting")
        return runnable, problems

    def run(self, models: dict[str, nn.Module], datasets: dict[str, Any], split: Any, device: torch.device, *,
            seed: int = 0, extra_models: dict[str, Any] | None = None, train_set: Any = None,
            metric_classes: list[type[Metric]] | None = None) -> SuiteResult:
        classes = metric_classes if metric_classes is not None else self.plan(models, split.is_classwise)[0]
        audits = [AUDITS.get(n) for n in self.audits]
        avail = [s for s in EVAL_SPLITS if s in datasets]
        need_splits = set().union(*(c.needs for c in classes), *(a.needs_logits | a.needs_features for a in audits)) \
            if (classes or audits) else set()
        ref_splits = set().union(*(c.needs for c in classes if c.needs_reference)) if classes else set()
        keep_logits = set().union(*(a.needs_logits for a in audits)) if audits else set()
        keep_feats = set().union(*(a.needs_features for a in audits)) if audits else set()
        order = sorted(models, key=lambda r: (r != "retrained", ROLE_ORDER.index(r) if r in ROLE_ORDER else 99, r))
        ref_store: dict[str, np.ndarray] = {}
        logits_store: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        feat_store: dict[tuple[str, str], np.ndarray] = {}
        values: dict[str, dict[str, Any]] = {}
        diags: dict[str, dict[str, Any]] = {}
        t_forward = t_update = 0.0
        t_compute: dict[str, float] = {}
        ref_sha: str | None = None
        split_sha = getattr(split, "sha256", None)
        for role in order:
            model = models[role]
            msha = model_sha256(model)
            insts = [c(**self.metric_options, retain_limit=len(datasets["test"])) if c.name.startswith(
                "mia_efficacy") else c(**self.metric_options) for c in classes]
            for s in avail:
                if s not in need_splits:
                    continue
                want_feats = s in keep_feats and hasattr(model, "forward_features") and hasattr(model, "head")
                chunks_l, chunks_y, chunks_f = [], [], []
                offset = 0
                t0 = time.perf_counter()
                key = (msha, split_sha or id(datasets[s]), s, self.batch_size, want_feats, str(device))
                for logits, labels, feats in _forward_memo(key, model, datasets[s], device, self.batch_size, want_feats):
                    t1 = time.perf_counter()
                    t_forward += t1 - t0
                    if not np.isfinite(logits).all():
                        bad = int(np.flatnonzero(~np.isfinite(logits).all(axis=1))[0]) + offset
                        raise DivergenceError(f"the {role} model produces non-finite logits on the {s} set (sample "
                                              f"{bad}); the model diverged — check the method's learning rate or the "
                                              "checkpoint")
                    out = Outputs(logits, labels, offset)
                    ref = None
                    if role != "retrained" and s in ref_store:
                        rl = ref_store[s][offset: offset + len(labels)]
                        ref = Outputs(rl, labels, offset)
                    elif role == "retrained" and s in ref_splits:
                        ref = out
                    for m in insts:
                        if s in m.needs:
                            m.update(s, out, ref if m.needs_reference else None)
                    if role == "retrained" and s in ref_splits or s in keep_logits:
                        chunks_l.append(logits)
                        chunks_y.append(labels)
                    if feats is not None:
                        chunks_f.append(feats)
                    offset += len(labels)
                    t0 = time.perf_counter()
                    t_update += t0 - t1
                if chunks_l:
                    cat = np.concatenate(chunks_l)
                    if role == "retrained" and s in ref_splits:
                        ref_store[s] = cat
                    if s in keep_logits:
                        logits_store[(role, s)] = (cat, np.concatenate(chunks_y))
                if chunks_f:
                    feat_store[(role, s)] = np.concatenate(chunks_f)
            if role == "retrained":
                ref_sha = msha
            vkey = None
            if split_sha is not None:  # without a split digest there is nothing safe to key on
                needs_ref = role != "retrained" and any(c.needs_reference for c in classes)
                vkey = (msha, ref_sha if needs_ref else None, split_sha, tuple(avail), tuple(c.name for c in classes),
                        repr(sorted(self.metric_options.items())), len(datasets["test"]), str(device))
            if vkey in _VALUES_MEMO:
                _VALUES_MEMO.move_to_end(vkey)
                vals, dg = copy.deepcopy(_VALUES_MEMO[vkey])
            else:
                vals, dg = {}, {}
                for m in insts:
                    t0 = time.perf_counter()
                    for k, v in m.compute().items():
                        (dg if k.endswith("_degenerate") else vals)[k] = v
                    t_compute[m.name] = t_compute.get(m.name, 0.0) + time.perf_counter() - t0
                if vkey is not None:
                    _VALUES_MEMO[vkey] = copy.deepcopy((vals, dg))
                    while len(_VALUES_MEMO) > FORWARD_MEMO_SIZE:
                        _VALUES_MEMO.popitem(last=False)
            values[role] = vals
            diags[role] = dg
        extras: dict[str, Any] = {}
        t_audit: dict[str, float] = {}
        if audits:
            ctx = AuditContext(models=dict(models), datasets=datasets, split=split, device=device, seed=seed,
                               logits=logits_store, features=feat_store, extra_models=dict(extra_models or {}),
                               batch_size=self.batch_size, train_set=train_set)
            for a in audits:
                ctx.options = dict(self.audit_options.get(a.name, {}))
                t0 = time.perf_counter()
                res = a.fn(ctx)
                t_audit[a.name] = time.perf_counter() - t0
                for role, kv in res.get("per_model", {}).items():
                    for k, v in kv.items():
                        (diags if k.endswith("_censored") else values).setdefault(role, {})[k] = v
                extras[a.name] = res.get("extras", {})
        timing = {"forward_seconds": t_forward, "update_seconds": t_update, "compute_seconds": t_compute,
                  "audit_seconds": t_audit}
        return SuiteResult(values, diags, extras, timing)


_FORWARD_MEMO: "OrderedDict[tuple, list[tuple]]" = OrderedDict()
FORWARD_MEMO_SIZE = 24
# Metric values per (model hash, reference model hash, split, metric set, options): the same original and
# retrained models are scored once per method in a benchmark, and the SVC attack dominates that cost. Every
# default metric is a deterministic function of the two models' outputs on the split, so a hit is exact.
_VALUES_MEMO: "OrderedDict[tuple, tuple[dict[str, Any], dict[str, Any]]]" = OrderedDict()


def _forward_memo(key: tuple, model: nn.Module, ds: Any, device: torch.device, batch_size: int, want_features: bool):
    """`_forward`, remembered per (model weights hash, split, split part): a benchmark evaluates the same original
    and retrained models once per method, and their outputs do not change. Bounded LRU, in-process only."""
    if key in _FORWARD_MEMO:
        _FORWARD_MEMO.move_to_end(key)
        yield from _FORWARD_MEMO[key]
        return
    chunks = []
    for item in _forward(model, ds, device, batch_size, want_features):
        chunks.append(item)
        yield item
    _FORWARD_MEMO[key] = chunks
    while len(_FORWARD_MEMO) > FORWARD_MEMO_SIZE:
        _FORWARD_MEMO.popitem(last=False)


@torch.inference_mode()
def _forward(model: nn.Module, ds: Any, device: torch.device, batch_size: int, want_features: bool):
    from ..data.loading import iter_batches

    from ..models import memory_format

    was = model.training
    model.eval()
    fmt = memory_format(model)
    model.to(memory_format=fmt)  # layout only: values are unchanged, inference is ~3x faster on CPU
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


# ------------------------------------------------------------------------------------------- gaps etc.
def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def compute_gaps(unlearned: dict[str, Any], retrained: dict[str, Any], mia_flavour: str = "svc_confidence"
                 ) -> dict[str, Any]:
    """|unlearned − retrained| for every shared metric with a gap, plus ``avg_gap_to_retrained`` (§1.5)."""
    gaps: dict[str, Any] = {}
    for k, v in unlearned.items():
        info = KEY_META.get(k)
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


def noise_floor(retrained_a: Any, retrained_b: Any, bundle: Any, split: Any, device: Any = "auto", *,
                mia_flavour: str = "svc_confidence", batch_size: int = 1024) -> float:
    """Avg. Gap between two retrained models of different seeds (§7): gaps smaller than this are noise."""
    from ..device import resolve_device

    a, _ = _unwrap(retrained_a, "retrained")
    b, _ = _unwrap(retrained_b, "retrained_2")
    if a is None or b is None:
        raise ConfigError("noise_floor needs two retrained models")
    datasets = eval_datasets(bundle, split)
    suite = EvaluationSuite(metrics=[m for m in DEFAULT_METRICS if not METRICS.get(m).needs_reference],
                            batch_size=batch_size)
    dev = resolve_device(device)
    _check_classes({"retrained": a, "retrained_2": b}, bundle.info.num_classes)
    res = suite.run({"retrained": a, "unlearned": b}, datasets, split, dev)
    gaps = compute_gaps(res.metrics["unlearned"], res.metrics["retrained"], mia_flavour)
    if "avg_gap_to_retrained" not in gaps:
        raise ConfigError("the noise floor could not be computed (a gap metric is NaN)")
    return gaps["avg_gap_to_retrained"]


def _check_classes(models: dict[str, nn.Module], num_classes: int) -> None:
    problems = []
    for role, m in models.items():
        k = _num_outputs(m)
        if k is not None and k != num_classes:
            problems.append(f"the {role} model has {k} outputs but the dataset has {num_classes} classes")
    if problems:
        raise IncompatibleError(problems + ["all models must be trained for the same dataset and classes"])


# --------------------------------------------------------------------------------------------- evaluate
def evaluate(unlearned: Any, bundle: Any, split: Any, *, original: Any = None, retrained: Any = None,
             metrics: Sequence[str] | str | None = None, device: Any = "auto", runtime_seconds: float | None = None,
             runtime_setup_seconds: float | None = None, retrain_seconds: float | None = None,
             noise_floor: float | Any = None, method: str | None = None, config: dict[str, Any] | None = None,
             seed: int | None = None, extra_models: dict[str, Any] | None = None,
             mia_flavour: str = "svc_confidence", reproduce: bool = False,
             audit_options: dict[str, dict[str, Any]] | None = None, batch_size: int = 1024,
             retrained_split_sha256: str | None = None, runtime_update_seconds: float | None = None,
             model_name: str | None = None) -> dict[str, Any]:
    """Evaluate an unlearned model (and the original / retrained ones) and return a §8.2 record.

    Every model goes through the identical code path; each metric reads the same single forward pass per
    (model, split). All input checks run before any compute.

    Args:
        unlearned: the unlearned model θ_u.
        bundle: the `DatasetBundle` the models were trained on.
        split: the `Split` (forget / retain / test indices) that was unlearned.
        original: the original model θ_o (optional; gets the same metrics).
        retrained: the retrained oracle θ_r (a module or a `TrainedModel`; needed for gaps and KL/JS).
        metrics: metric and audit names (default: the default suite; see `resolve_selection`).
        device: ``auto``, ``cpu``, ``cuda`` …
        runtime_seconds: wall-clock of the unlearning run (§1.7, measured by the runner).
        runtime_setup_seconds: its preprocessing part.
        retrain_seconds: wall-clock of training the retrained model (for ``speedup_vs_retrained``).
        noise_floor: the noise floor (float), or a second retrained model to compute it from (§7).
        method: method name for the record.
        config: method config for the record.
        seed: seed of the run (default: the split's seed).
        extra_models: more models: single modules are evaluated as extra roles (e.g. ``retrained_2``);
            audits read lists (``unlearned_runs``, ``retrained_runs``, ``ceiling_runs``) and ``ulira``.
        mia_flavour: MIA number inside the Avg. Gap: ``svc_confidence`` (SalUn) or ``entropy_logreg`` (SFR-on).
        reproduce: reproduce published bugs (the m_entropy feature).
        audit_options: per-audit options, e.g. ``{"relearn_time": {"max_steps": 200}}``.
        batch_size: evaluation batch size.
        retrained_split_sha256: split digest the retrained model was trained for; refused if it differs.
        runtime_update_seconds: update part of the runtime (default: runtime − setup).
        model_name: architecture name for the record (default: from the model's config).

    Returns:
        The record (a JSON-serialisable dict); write it with `unlearnkit.evaluation.write_record`.
    """
    from ..device import resolve_device
    from .records import build_record

    if mia_flavour not in MIA_FLAVOURS:
        raise ConfigError(f"mia_flavour must be one of {', '.join(MIA_FLAVOURS)}, got {mia_flavour!r}")
    streamed, audit_names, derived = resolve_selection(metrics)
    explicit = set()
    if metrics is not None:
        explicit = {n.strip() for n in (metrics.split(",") if isinstance(metrics, str) else metrics)}
    u, _ = _unwrap(unlearned, "unlearned")
    if u is None:
        raise ConfigError("evaluate needs the unlearned model")
    o, _ = _unwrap(original, "original")
    r, r_meta = _unwrap(retrained, "retrained")
    models: dict[str, nn.Module] = {"unlearned": u}
    if o is not None:
        models["original"] = o
    if r is not None:
        models["retrained"] = r
    singles: dict[str, nn.Module] = {}
    lists: dict[str, Any] = {}
    for k, v in (extra_models or {}).items():
        if isinstance(v, nn.Module):
            if k in models:
                raise ConfigError(f"extra_models key {k!r} clashes with a model role; use another name")
            singles[k] = v
        else:
            lists[k] = v
    nf_model = None
    if noise_floor is not None and not isinstance(noise_floor, (int, float)):
        nf_model, _ = _unwrap(noise_floor, "noise-floor retrained")
        if r is None:
            raise ConfigError("computing the noise floor from a second retrained model needs retrained=")

    # ---- checks before any compute
    datasets = eval_datasets(bundle, split)
    _check_classes({**models, **singles, **({"noise-floor retrained": nf_model} if nf_model is not None else {})},
                   bundle.info.num_classes)
    want = retrained_split_sha256 or r_meta.get("split_sha256") or getattr(r, "unlearnkit_split_sha256", None)
    if r is not None and want and want != split.sha256:
        raise IncompatibleError(f"the retrained model was trained for split {want[:12]}… but the evaluated split is "
                                f"{split.sha256[:12]}… ({split.spec}, seed {split.seed}); retrain on this split "
                                "(unlearnkit train --forget …) or evaluate the split it was made for")
    suite = EvaluationSuite(metrics=streamed, audits=audit_names, metric_options={"reproduce": reproduce},
                            audit_options=dict(audit_options or {}), batch_size=batch_size)
    classes, problems = suite.plan(models, split.is_classwise, lists, explicit)
    if "tow_to_retrained" in derived and r is None:
        problems.append("tow_to_retrained needs the retrained model")
    if problems:
        raise IncompatibleError(problems)
    dev = resolve_device(device)

    # ---- compute
    t0 = time.perf_counter()
    res = suite.run({**models, **singles}, datasets, split, dev, seed=split.seed if seed is None else seed,
                    extra_models=lists, train_set=bundle.train, metric_classes=classes)
    eval_seconds = time.perf_counter() - t0
    gaps: dict[str, Any] = {}
    if r is not None:
        gaps = compute_gaps(res.metrics["unlearned"], res.metrics["retrained"], mia_flavour)
        if "tow_to_retrained" in derived:
            res.metrics["unlearned"]["tow_to_retrained"] = tow(res.metrics["unlearned"], res.metrics["retrained"])
    nf = None
    if isinstance(noise_floor, (int, float)) and not isinstance(noise_floor, bool):
        nf = float(noise_floor)
    elif nf_model is not None:
        nf = globals()["noise_floor"](r, nf_model, bundle, split, dev, mia_flavour=mia_flavour, batch_size=batch_size)
    timing = dict(res.timing, total_seconds=eval_seconds)
    return build_record(
        models=models, singles=singles, result=res, gaps=gaps, bundle=bundle, split=split, device=dev,
        runtime_seconds=runtime_seconds, runtime_setup_seconds=runtime_setup_seconds,
        runtime_update_seconds=runtime_update_seconds, retrain_seconds=retrain_seconds, noise_floor=nf,
        method=method, config=config, seed=split.seed if seed is None else seed, mia_flavour=mia_flavour,
        reproduce=reproduce, streamed=[c.name for c in classes], audits=audit_names, timing=timing,
        model_name=model_name)


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
    order = {k: i for i, k in enumerate(KEY_META)}
    keys.sort(key=lambda k: order.get(k, len(order)))

    def cell(v: Any) -> Any:
        return float(v) if _is_num(v) else ("–" if v is None else str(v))

    rows = []
    for k in keys:
        info = KEY_META.get(k)
        unit = f" ({info.unit})" if info and info.unit not in ("-", "") else ""
        rows.append({"metric": k + unit,
                     **{role: cell(models.get(role, {}).get("metrics", {}).get(k)) for role in ROLE_ORDER},
                     "gap": cell(gaps.get(k))})
    if "avg_gap_to_retrained" in gaps:
        rows.append({"metric": "avg_gap_to_retrained (pp)", "original": "–", "retrained": 0.0,
                     "unlearned": cell(gaps["avg_gap_to_retrained"]), "gap": "–"})
    if record.get("noise_floor_avg_gap") is not None:
        rows.append({"metric": "noise_floor_avg_gap (pp)", "original": "–", "retrained": "–",
                     "unlearned": cell(record["noise_floor_avg_gap"]), "gap": "–"})
    return rows

