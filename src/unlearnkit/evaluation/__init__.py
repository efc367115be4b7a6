"""Evaluation: metrics against the retrained model, audits, records.

* `evaluate` runs the default suite (accuracies, MIA-Efficacy, SFR-on's MIA, KL/JS to retrained, gaps,
  runtime) with one forward pass per (model, split) and returns a JSON-ready record (evaluation.md §8.2).
* Audits (population MIAs, relearn time, linear probe, CKA, competition score, U-LiRA-lite) are off by
  default and selected by name in ``metrics=``.
* `EvaluationCache` remembers forward passes and metric values across `evaluate` calls (one per benchmark).
* `write_record` / `read_record` / `aggregate` / `records_to_frame` handle records; `noise_floor` gives
  the Avg. Gap between two retrained models.
* `functional` and `mia` hold the pure functional cores.
"""

from __future__ import annotations

from typing import Any

from . import functional, mia
from .api import EvalOptions, RunInfo, evaluate, format_table, noise_floor
from .audits import AUDITS
from .cache import EvaluationCache
from .metrics import METRICS, Metric, MetricInfo, MetricOptions, Outputs
from .records import aggregate, read_record, records_to_frame, run_id, t_interval, write_record
from .suite import DEFAULT_METRICS, EvaluationSuite, metric_infos, resolve_selection

__all__ = [
    "AUDITS",
    "DEFAULT_METRICS",
    "METRICS",
    "EvalOptions",
    "EvaluationCache",
    "EvaluationSuite",
    "Metric",
    "MetricInfo",
    "MetricOptions",
    "Outputs",
    "RunInfo",
    "aggregate",
    "evaluate",
    "format_table",
    "functional",
    "metric_infos",
    "metric_table",
    "mia",
    "noise_floor",
    "read_record",
    "records_to_frame",
    "resolve_selection",
    "run_id",
    "t_interval",
    "write_record",
]


def metric_table() -> list[dict[str, Any]]:
    """Rows ``{name, unit, direction, default, section}`` of every metric, derived key and audit output
    (for ``unlearnkit list metrics``); audits are listed by their selectable name with their outputs."""
    rows = []
    for name, info in metric_infos().items():
        if info.kind == "audit":
            continue
        rows.append(
            {
                "name": name,
                "unit": info.unit,
                "direction": info.direction,
                "default": "on" if info.default else "off",
                "section": info.section,
            }
        )
    for name in AUDITS.names():
        a = AUDITS.get(name)
        rows.append(
            {"name": f"{name} (audit)", "unit": "-", "direction": "see outputs", "default": "off", "section": a.section}
        )
    return rows
