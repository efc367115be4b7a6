"""Report figures: pure functions from an aggregated `Scenario` to PNG bytes (matplotlib, Agg canvas).

Figures are drawn on a `matplotlib.figure.Figure` with the Agg canvas directly, so the global pyplot
backend of the caller is never touched and no display is needed.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .scenario import Row, Scenario

PANELS = (
    ("accuracy_forget", "FA (%)"),
    ("accuracy_retain", "RA (%)"),
    ("accuracy_test", "TA (%)"),
    ("mia_efficacy_forget", "MIA-Efficacy (%)"),
)


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        from ..errors import MissingDependencyError

        raise MissingDependencyError("the report plots need matplotlib: pip install 'unlearnkit[report]'") from None
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def _colours(rows: list[Row]) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]
    out: list[Any] = []
    k = 0
    for r in rows:
        if r.kind == "original":
            out.append("#9e9e9e")
        elif r.kind == "retrained":
            out.append("#222222")
        else:
            out.append(cmap(k % 20))
            k += 1
    return out


def _stat(row: Row, key: str) -> tuple[float | None, float]:
    s = row.metrics.get(key)
    if s is None:
        return None, 0.0
    return s["mean"], s["std"] or 0.0


def metric_bars(sc: Scenario) -> bytes | None:
    """Per-method bars of FA, RA, TA and MIA-Efficacy (mean ± std), beside Original and Retrained."""
    rows = [r for r in sc.rows if any(r.metrics.get(k) for k, _ in PANELS)]
    if not any(r.kind == "method" for r in rows):
        return None
    colours = _colours(rows)
    fig = _figure(max(9.0, 0.5 * len(rows) * 2), 7.5)
    axes = fig.subplots(2, 2)
    ref = sc.retrained
    for ax, (key, title) in zip(axes.flat, PANELS, strict=False):
        xs = list(range(len(rows)))
        means = [(_stat(r, key)[0] or 0.0) for r in rows]
        stds = [_stat(r, key)[1] for r in rows]
        ax.bar(xs, means, yerr=stds, color=colours, capsize=2, edgecolor="white", linewidth=0.5)
        ref_stat = ref.metrics.get(key) if ref is not None else None
        if ref_stat:
            ax.axhline(ref_stat["mean"], color="#222222", linestyle="--", linewidth=1, label="retrained")
        ax.set_title(title)
        ax.set_xticks(xs)
        ax.set_xticklabels([r.label for r in rows], rotation=60, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{sc.title}: mean ± std over seeds (dashed: retrained)", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def tradeoff(sc: Scenario) -> bytes | None:
    """Avg. gap to the retrained model (lower is better) against the method's wall time."""
    pts: list[tuple[Row, tuple[float, float], tuple[float, float]]] = []
    for r in sc.rows:
        if r.kind != "method":
            continue
        (t, ts), (g, gs) = _stat(r, "runtime_seconds"), _stat(r, "avg_gap_to_retrained")
        if t is not None and g is not None:
            pts.append((r, (t, ts), (g, gs)))
    if not pts:
        return None
    fig = _figure(8.0, 5.5)
    ax = fig.subplots()
    colours = _colours([r for r, _, _ in pts])
    floor = next((s["mean"] for s in (r.metrics.get("noise_floor_avg_gap") for r in sc.rows) if s), None)
    if floor is not None:
        ax.axhspan(0, floor, color="#4caf50", alpha=0.15, label=f"noise floor ({floor:.2f})")
    ref = sc.retrained
    ref_time = ref.metrics.get("runtime_seconds") if ref is not None else None
    if ref_time:
        ax.axvline(ref_time["mean"], color="#222222", linestyle="--", linewidth=1, label="retrain time")
    for (r, (t, ts), (g, gs)), c in zip(pts, colours, strict=False):
        ax.errorbar([t], [g], xerr=[ts], yerr=[gs], fmt="o", color=c, capsize=3, markersize=6)
        ax.annotate(r.label, (t, g), textcoords="offset points", xytext=(5, 4), fontsize=8)
    times = [t for _, (t, _), _ in pts if t > 0]
    if times and max(times) / max(min(times), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("unlearning wall time (s)")
    ax.set_ylabel("avg. gap to retrained (pp)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.set_title(f"{sc.title}: accuracy of forgetting vs cost")
    if floor is not None or ref is not None:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def per_class_accuracy(sc: Scenario) -> bytes | None:
    """Per-class test accuracy of the retrained model and each method; forgotten classes shaded.

    Only for class-wise scenarios whose records hold ``per_class_accuracy_test``; None otherwise.
    """
    forgotten = sc.forgotten_classes
    rows = [r for r in sc.rows if r.per_class and r.kind in ("retrained", "method")]
    if not forgotten or not any(r.kind == "method" for r in rows):
        return None
    n_classes = len(rows[0].per_class or [])
    rows = [r for r in rows if len(r.per_class or []) == n_classes]
    colours = _colours(rows)
    fig = _figure(max(9.0, 0.12 * n_classes * len(rows) + 2), 4.8)
    ax = fig.subplots()
    width = 0.85 / len(rows)
    for i, (r, c) in enumerate(zip(rows, colours, strict=False)):
        xs = [k + (i - (len(rows) - 1) / 2) * width for k in range(n_classes)]
        ax.bar(xs, r.per_class, width=width, color=c, label=r.label)
    for k in forgotten:
        if 0 <= k < n_classes:
            ax.axvspan(k - 0.45, k + 0.45, color="#f44336", alpha=0.1)
    ax.set_xticks(range(n_classes))
    ax.set_xticklabels([f"{k}{' (forgotten)' if k in forgotten else ''}" for k in range(n_classes)], fontsize=8)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=max(1, math.ceil(len(rows) / 12)), loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(f"{sc.title}: per-class test accuracy (mean over seeds)")
    fig.tight_layout()
    return _png(fig)
