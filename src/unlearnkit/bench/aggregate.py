"""From records to scenarios: read a metric of a record, group records by scenario and method, summarize over seeds."""

from __future__ import annotations

from typing import Any

from .audit_report import audit_section
from .identity import ORIGINAL, RETRAINED, identity
from .identity import dig as _dig
from .scenario import COLUMNS, GAP_KEYS, Row, Scenario
from .stats import summarize


# ----------------------------------------------------------------------------------------- record access
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _first(*values: Any) -> float | None:
    for v in values:
        if _num(v) is not None:
            return _num(v)
    return None


def metric_value(rec: dict[str, Any], role: str, key: str) -> float | None:
    """One number of one model role ("original", "retrained", "unlearned") of a record, or None."""
    model = _dig(rec, "models", role) or {}
    found = model.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    if key == "noise_floor_avg_gap":
        return _num(rec.get("noise_floor_avg_gap"))
    if key == "avg_gap_to_retrained":
        if role != "unlearned":
            return None
        return _first(_dig(rec, "gaps_to_retrained", "avg_gap_to_retrained"), metrics.get(key))
    if key == "runtime_seconds":
        return _first(model.get("runtime_seconds"), metrics.get("runtime_seconds"))
    if key == "speedup_vs_retrained":
        if role != "unlearned":
            return None
        v = _first(metrics.get(key), model.get(key))
        if v is None:  # derived from the two recorded runtimes when the record does not state it
            rt, ut = (
                metric_value(rec, "retrained", "runtime_seconds"),
                metric_value(rec, "unlearned", "runtime_seconds"),
            )
            v = rt / ut if rt and ut else None
        return v
    if key in ("kl_to_retrained_forget",) and role != "unlearned":
        return None
    return _num(metrics.get(key))


def gap_value(rec: dict[str, Any], key: str) -> float | None:
    return _num(_dig(rec, "gaps_to_retrained", key))


def per_class(rec: dict[str, Any], role: str) -> list[float] | None:
    v = _dig(rec, "models", role, "metrics", "per_class_accuracy_test")
    if isinstance(v, list) and v and all(_num(x) is not None for x in v):
        return [float(x) for x in v]
    if isinstance(v, dict) and v:
        try:
            items = sorted((int(k), _num(x)) for k, x in v.items())
        except ValueError:
            return None
        if all(x is not None for _, x in items) and [k for k, _ in items] == list(range(len(items))):
            return [float(x) for _, x in items]  # type: ignore[arg-type]
    return None


def _mean_per_class(lists: list[list[float]]) -> list[float] | None:
    lists = [x for x in lists if x]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [sum(col) / len(col) for col in zip(*lists, strict=True)]


def aggregate(records: list[dict[str, Any]]) -> list[Scenario]:
    """Group records by (dataset, model, forget) and method label; summarize every column over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        ident = identity(rec)
        groups.setdefault((ident["dataset"], ident["model"], ident["forget"]), []).append(rec)
    scenarios = []
    for (dataset, model, forget), recs in groups.items():
        by_label: dict[str, list[dict[str, Any]]] = {}
        baseline: dict[Any, dict[str, Any]] = {}  # seed -> first record (original/retrained are shared)
        for rec in recs:
            ident = identity(rec)
            by_label.setdefault(ident["label"], []).append(rec)
            baseline.setdefault(ident["seed"], rec)
        rows = []
        for role, label in (("original", ORIGINAL), ("retrained", RETRAINED)):
            base = list(baseline.values())
            if not any(_dig(r, "models", role, "metrics") for r in base):
                continue
            skip = {"noise_floor_avg_gap"} if role == "original" else set()
            rows.append(
                Row(
                    label,
                    role,
                    role,
                    sorted(baseline, key=str),
                    {
                        c.key: None if c.key in skip else summarize(metric_value(r, role, c.key) for r in base)
                        for c in COLUMNS
                    },
                    per_class=_mean_per_class([per_class(r, role) or [] for r in base]),
                )
            )
        for label, rs in by_label.items():
            m = {c.key: summarize(metric_value(r, "unlearned", c.key) for r in rs) for c in COLUMNS}
            m["avg_gap_of_means"] = _gap_of_means(rs)
            gaps = {k: summarize(gap_value(r, k) for r in rs) for k in GAP_KEYS}
            rows.append(
                Row(
                    label,
                    "method",
                    identity(rs[0])["method"],
                    sorted((identity(r)["seed"] for r in rs), key=str),
                    m,
                    gaps,
                    per_class=_mean_per_class([per_class(r, "unlearned") or [] for r in rs]),
                )
            )
        devices = sorted(
            {
                str(_dig(r, "environment", "device_name") or _dig(r, "environment", "device"))
                for r in recs
                if _dig(r, "environment")
            }
        )
        flavours = sorted(
            {
                str(_dig(r, "evaluation_config", "mia_flavour"))
                for r in recs
                if _dig(r, "evaluation_config", "mia_flavour")
            }
        )
        sc = Scenario(dataset, model, forget, rows, len(recs), devices, flavours)
        sc.audits = audit_section(recs, sc.classwise)
        scenarios.append(sc)
    return scenarios


def _gap_of_means(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Paper-compatible Avg. gap: |mean unlearned − mean retrained| per metric over seeds, then averaged."""
    parts = []
    for k in GAP_KEYS:
        u = summarize(metric_value(r, "unlearned", k) for r in recs)
        t = summarize(metric_value(r, "retrained", k) for r in recs)
        if u is None or t is None:
            return None
        parts.append(abs(u["mean"] - t["mean"]))
    return {"mean": sum(parts) / len(parts), "std": None, "ci95": None, "n": len(recs)}
