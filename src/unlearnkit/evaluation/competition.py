"""NeurIPS 2023 unlearning-competition score (evaluation.md §2): per-example ε, H-score, final score.

Functional core over the logit-scaled confidences of ``N`` retrained and ``N`` unlearned models on the
forget set (arrays of shape (N, n)); `competition_audit` in `unlearnkit.evaluation.audits` builds those
arrays from models. Vectorised numpy; rates for a whole threshold grid come from ``searchsorted`` on the
sorted N-vectors, so one example costs O(thresholds · log N).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import functional as F

__all__ = [
    "EPS_CAP",
    "competition_score",
    "eps_histogram",
    "epsilon_max",
    "epsilon_per_example",
    "epsilons",
    "forget_quality",
    "h_score",
]

EPS_CAP = 50.0
DELTA = 1e-5
BUFFER = 2.0  # half-width of the left-end search window of the interval rule


def epsilon_max(n_models: int) -> int:
    """``ceil(ln(N − 1))``: the largest ε that N samples per side can resolve (§2.5); N ≥ 4."""
    if n_models < 4:
        raise ConfigError(f"the competition score needs N ≥ 4 models per side, got {n_models}")
    return math.ceil(math.log(n_models - 1))


def _grid(lo: float, hi: float, per_unit: int) -> np.ndarray:
    return np.linspace(lo, hi, math.ceil(per_unit * (hi - lo)))


def _rate_ge(sorted_v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """mean(v ≥ t) for every t."""
    return (len(sorted_v) - np.searchsorted(sorted_v, t, side="left")) / len(sorted_v)


def _rate_in(sorted_v: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """mean(lo ≤ v ≤ hi) for every pair."""
    return (np.searchsorted(sorted_v, hi, side="right") - np.searchsorted(sorted_v, lo, side="left")) / len(sorted_v)


def _eps_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float) -> tuple[float, int]:
    """(max ε over thresholds, number of surviving thresholds), rule 4 of §2.4."""
    perfect = (fpr == 0) & (fnr == 0)
    if perfect.any():
        return math.inf, int(perfect.sum())
    keep = (fpr * fnr) != 0
    if not keep.any():
        return math.nan, 0
    fpr, fnr = fpr[keep], fnr[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(1 - delta - fpr > 0, np.log(np.maximum(1 - delta - fpr, 1e-300)) - np.log(fnr), np.nan)
        b = np.where(1 - delta - fnr > 0, np.log(np.maximum(1 - delta - fnr, 1e-300)) - np.log(fpr), np.nan)
    both = np.fmax(a, b)  # NaN only where both terms are NaN
    if np.all(np.isnan(both)):
        return 0.0, int(keep.sum())
    return max(0.0, float(np.nanmax(both))), int(keep.sum())


def epsilon_per_example(
    retrained: Any,
    unlearned: Any,
    *,
    rules: Iterable[str] = ("single", "double"),
    thresholds_per_unit: int = 100,
    delta: float = DELTA,
) -> float:
    """ε of one forget example from the N-vectors of its statistic under retrained and unlearned models (§2.4).

    Args:
        retrained: (N,) logit-scaled confidences from N retrained models.
        unlearned: (N,) the same from N unlearned models.
        rules: ``"single"`` (one threshold) and/or ``"double"`` (interval) decision rules.
        thresholds_per_unit: grid points per unit of the statistic (competition: 100).
        delta: the δ of (ε, δ)-unlearning (competition: 1e-5).
    """
    r = F.as_numpy(retrained, np.float64).ravel()
    u = F.as_numpy(unlearned, np.float64).ravel()
    rules = set(rules)
    if not rules or not rules <= {"single", "double"}:
        raise ConfigError(f"rules must be a non-empty subset of {{'single', 'double'}}, got {sorted(rules)}")
    if not (np.isfinite(r).all() and np.isfinite(u).all()):
        raise ConfigError("competition statistics contain NaN or inf")
    pos, neg = (u, r) if np.median(u) > np.median(r) else (r, u)
    rp, rn = np.ptp(pos), np.ptp(neg)
    a, b = max(rp, rn), min(rp, rn)
    if a == 0 or b / a < 0.01:
        return EPS_CAP  # degenerate spread: a deterministic unlearner scores the worst by design
    best, survived = -math.inf, 0
    if "single" in rules:
        ps, ns = np.sort(pos), np.sort(neg)
        lo, hi = min(ps[0], ns[0]), max(ps[-1], ns[-1])
        t = _grid(lo, hi, thresholds_per_unit)
        tpr, fpr = _rate_ge(ps, t), _rate_ge(ns, t)
        e, k = _eps_from_rates(fpr, 1 - tpr, delta)
        survived += k
        if k:
            best = max(best, e)
    if "double" in rules:
        p2, n2 = (pos, neg) if np.ptp(pos) <= np.ptp(neg) else (neg, pos)  # the peakier one is "positive"
        ps, ns = np.sort(p2), np.sort(n2)
        w = ps[-1] - ps[0]
        rights = _grid(ps[0] + w - BUFFER, ps[-1] + BUFFER, thresholds_per_unit)
        offsets = np.linspace(-w - BUFFER, -w + BUFFER, math.ceil(2 * BUFFER * thresholds_per_unit))
        lefts = rights[:, None] + offsets[None, :]
        rr = np.broadcast_to(rights[:, None], lefts.shape)
        tpr, fpr = _rate_in(ps, lefts.ravel(), rr.ravel()), _rate_in(ns, lefts.ravel(), rr.ravel())
        e, k = _eps_from_rates(fpr, 1 - tpr, delta)
        survived += k
        if k:
            best = max(best, e)
    if survived == 0:
        warnings.warn(
            "no threshold survived for a competition example (too few distinct values); ε set to the cap",
            RuntimeWarning,
            stacklevel=2,
        )
        return EPS_CAP
    return float(min(max(best, 0.0), EPS_CAP))


def epsilons(retrained: Any, unlearned: Any, **kw: Any) -> np.ndarray:
    """ε for every forget example; ``retrained`` and ``unlearned`` have shape (N, n)."""
    r, u = F.as_numpy(retrained, np.float64), F.as_numpy(unlearned, np.float64)
    if r.ndim != 2 or r.shape != u.shape:
        raise ConfigError(
            f"retrained and unlearned statistics must both be (N, n) with equal shapes, got {r.shape} and {u.shape}"
        )
    epsilon_max(r.shape[0])
    return np.array([epsilon_per_example(r[:, i], u[:, i], **kw) for i in range(r.shape[1])])


def h_score(eps: Any, n_models: int) -> np.ndarray:
    """Per-example points ``2^(−floor(2ε))`` when ε < ε_max, else 0 (§2.5)."""
    e = F.as_numpy(eps, np.float64)
    emax = epsilon_max(n_models)
    return np.where(e < emax, np.power(2.0, -np.floor(2.0 * e)), 0.0)


def forget_quality(eps: Any, n_models: int) -> float:
    """F = mean of the H-score over forget examples, in [0, 1], higher is better."""
    return float(h_score(eps, n_models).mean())


def eps_histogram(eps: Any, n_models: int) -> dict[str, int]:
    """Counts per 0.5-wide bucket below ε_max, plus ``">=ε_max"`` for the rest."""
    e = F.as_numpy(eps, np.float64)
    emax = epsilon_max(n_models)
    out = {f"{k / 2:.1f}": int(((e >= k / 2) & (e < (k + 1) / 2) & (e < emax)).sum()) for k in range(2 * emax)}
    out[f">={emax}"] = int((e >= emax).sum())
    return out


def competition_score(
    forget_quality_value: float,
    retain_unlearned: float,
    retain_retrained: float,
    test_unlearned: float,
    test_retrained: float,
) -> float:
    """``F · (RA_U / RA_R) · (TA_U / TA_R)`` (§2.6), no clipping."""
    return float(forget_quality_value * (retain_unlearned / retain_retrained) * (test_unlearned / test_retrained))


def bootstrap_forget_quality(eps: Any, n_models: int, replicates: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of F from resampling forget examples (columns) with replacement (§2.8)."""
    h = h_score(eps, n_models)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(h), size=(replicates, len(h)))
    means = h[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
