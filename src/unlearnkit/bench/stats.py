"""Summaries over seeds (evaluation.md §7): mean, sample std (ddof = 1) and the 95% t-interval.

The one place where the bench reports aggregate numbers; tables, plots, CSV and ``aggregates.json`` all call
`summarize`. It delegates to `unlearnkit.evaluation.records.t_interval` (the evaluation package's aggregator)
and carries an equivalent fallback for when that package cannot be imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any


def _numbers(values: Iterable[Any]) -> list[float]:
    return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]


def t_quantile(n: int) -> float:
    """``t_{0.975, n-1}``, the multiplier of the 95% interval for ``n`` seeds (n >= 2)."""
    from scipy.stats import t

    return float(t.ppf(0.975, n - 1))


def summarize(values: Iterable[Any]) -> dict[str, Any] | None:
    """``{"mean", "std", "ci95": [lo, hi], "n"}`` over the numbers in ``values`` (None entries are dropped).

    ``std`` and ``ci95`` are None for a single value; the result is None when there is no number at all.

    Example:
        >>> s = summarize([1.0, 2.0, 3.0])
        >>> s["mean"], s["std"], [round(x, 3) for x in s["ci95"]]
        (2.0, 1.0, [-0.484, 4.484])
    """
    xs = _numbers(values)
    n = len(xs)
    if n == 0:
        return None
    try:
        from ..evaluation.records import t_interval
    except ImportError:
        return _summarize(xs)
    out = t_interval(xs)
    return None if not out.get("n") else {"mean": out["mean"], "std": out["std"], "ci95": out["ci95"], "n": out["n"]}


def _summarize(xs: list[float]) -> dict[str, Any] | None:
    """The same statistics without the evaluation package."""
    n = len(xs)
    if n == 0:
        return None
    mean = math.fsum(xs) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(n) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}
