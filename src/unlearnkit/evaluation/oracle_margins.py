"""Oracle-distribution margin score, in the spirit of KLoM (Georgiev et al. 2024, "Attribute-to-Delete").

One retrained model is one draw from the distribution of retrained models; a gap to it mixes the method's
error with the oracle's own seed noise. Here ``K`` retrained oracles (different seeds, cached) give, per
example, a *distribution* of margins, and the unlearned model's margin is placed in it.

* margin ``m(x, y) = z_y − logsumexp_{k≠y} z_k`` — the logit-scaled confidence φ of evaluation.md §2.3;
* per example ``i``: ``μ_i``, ``σ_i`` = mean and sample std (ddof 1) of the K oracles' margins (σ floored at
  5 % of the median σ, so that examples where every oracle agrees do not divide by ~0);
* score ``z_i = (m_u,i − μ_i) / σ_i``; the summary is the distribution of ``|z_i|`` (mean, median, 90 %
  quantile, share above 2);
* the reference ("null") is leave-one-out: each oracle k scored against the other K − 1. An unlearned model
  that behaves like a retrained one scores like the oracles; a model that still remembers the forget set has
  larger margins on it and a much larger mean |z|;
* with several unlearned runs (N ≥ 2) also the per-example KL divergence between Gaussian fits of the
  unlearned runs' and the oracles' margins (the "KL of margins" of KLoM), averaged over examples.

If the unlearned margins equal one oracle's row exactly, that oracle is left out (the toy case "the unlearned
model *is* an oracle" then gives exactly that oracle's leave-one-out score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from . import functional as F
from .audits import AUDITS, Audit, AuditContext, _audit_info, predict_np

__all__ = ["HIST_EDGES", "gaussian_kl", "margin_scores", "oracle_margin_summary", "standardized_distance"]

HIST_EDGES = tuple(float(x) for x in np.arange(0.0, 5.01, 0.25))  # |z| bins; the last bin is open (≥ 5)
SIGMA_FLOOR = 0.05


def _sigma(oracles: np.ndarray) -> np.ndarray:
    sd = oracles.std(axis=0, ddof=1)
    floor = SIGMA_FLOOR * float(np.median(sd)) + 1e-8
    return np.maximum(sd, floor)


def standardized_distance(margins: Any, oracle_margins: Any) -> np.ndarray:
    """Per-example ``(m_i − μ_i) / σ_i`` of one model's margins (n,) against K oracles' margins (K, n).

    A row of ``oracle_margins`` equal to ``margins`` is left out (leave-one-out). Needs K ≥ 2 after that.
    """
    m = F.as_numpy(margins, np.float64).reshape(-1)
    o = F.as_numpy(oracle_margins, np.float64)
    if o.ndim != 2 or o.shape[1] != m.shape[0]:
        raise ConfigError(f"oracle margins must be (K, n) with n = {m.shape[0]}, got {o.shape}")
    same = np.all(o == m[None, :], axis=1)
    if same.any():
        o = o[~same]
    if o.shape[0] < 2:
        raise ConfigError(
            f"the oracle-distribution score needs at least 2 oracles (other than the model), got {len(o)}"
        )
    if not (np.isfinite(m).all() and np.isfinite(o).all()):
        raise ConfigError("margins contain NaN or inf")
    return (m - o.mean(axis=0)) / _sigma(o)


def gaussian_kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-column KL( N(mean a, var a) || N(mean b, var b) ) of two (runs, n) arrays (ddof 1, floored σ)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = _sigma(a), _sigma(b)
    return np.log(s_b / s_a) + (s_a**2 + (mu_a - mu_b) ** 2) / (2 * s_b**2) - 0.5


def _summary(abs_z: np.ndarray) -> dict[str, float]:
    return {
        "mean": float(abs_z.mean()),
        "median": float(np.median(abs_z)),
        "q90": float(np.quantile(abs_z, 0.9)),
        "share_above_2": float((abs_z > 2).mean()),
    }


def _hist(abs_z: np.ndarray) -> list[int]:
    edges = np.asarray([*HIST_EDGES, np.inf])
    return [int(c) for c in np.histogram(abs_z, bins=edges)[0]]


def margin_scores(unlearned: Any, oracles: Any) -> dict[str, Any]:
    """Scores of one model's margins (n,) against K oracles' margins (K, n), with the leave-one-out null.

    Returns ``abs_z`` (per example), its summary, ``null`` (the summary of every oracle against the other
    K − 1, as lists over oracles), ``null_abs_z_pooled`` (all oracles' |z| together) and ``rank``: the share
    of oracles whose mean |z| is below the model's (≈ uniform in [0, 1] for a model that is one of them).
    """
    o = F.as_numpy(oracles, np.float64)
    if o.ndim != 2 or o.shape[0] < 3:
        raise ConfigError(f"the oracle-distribution score needs K ≥ 3 oracles (K, n), got shape {o.shape}")
    z = np.abs(standardized_distance(unlearned, o))
    null = [np.abs(standardized_distance(o[k], np.delete(o, k, axis=0))) for k in range(o.shape[0])]
    null_means = [float(x.mean()) for x in null]
    s = _summary(z)
    return {
        "abs_z": z,
        "summary": s,
        "null_mean": null_means,
        "null_abs_z_pooled": np.concatenate(null),
        "rank": float(np.mean([v < s["mean"] for v in null_means])),
    }


def oracle_margin_summary(
    unlearned_logits: Any,
    labels: Any,
    oracle_logits: list[Any],
    unlearned_runs_logits: list[Any] | None = None,
) -> dict[str, Any]:
    """Logits in, record numbers out (one split): |z| summary of the model, the oracles' leave-one-out null,
    histograms of |z| (model and pooled null, on ``HIST_EDGES``) and, with ≥ 2 unlearned runs, the mean
    per-example Gaussian KL of margins (runs ‖ oracles)."""
    m = F.logit_scaled_confidence(unlearned_logits, labels)
    o = np.stack([F.logit_scaled_confidence(lo, labels) for lo in oracle_logits])
    res = margin_scores(m, o)
    out: dict[str, Any] = {
        **{f"abs_z_{k}": v for k, v in res["summary"].items()},
        "null_abs_z_mean": float(np.mean(res["null_mean"])),
        "null_abs_z_mean_per_oracle": res["null_mean"],
        "rank_among_oracles": res["rank"],
        "hist_edges": list(HIST_EDGES),
        "hist_model": _hist(res["abs_z"]),
        "hist_null": _hist(res["null_abs_z_pooled"]),
        "K": int(o.shape[0]),
        "n": int(o.shape[1]),
    }
    if unlearned_runs_logits and len(unlearned_runs_logits) >= 2:
        u = np.stack([F.logit_scaled_confidence(lo, labels) for lo in unlearned_runs_logits])
        out["kl_of_margins_mean"] = float(gaussian_kl(u, o).mean())
        out["runs"] = len(u)
    return out


SPLITS = ("forget", "test")


def _audit_oracle_margins(ctx: AuditContext) -> dict[str, Any]:
    oracles = list(ctx.extra_models["retrained_runs"])
    runs = list(ctx.extra_models.get("unlearned_runs") or [])
    extras: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    for s in SPLITS:
        ds = ctx.datasets[s]
        o_logits = [predict_np(m, ds, ctx.device)[0] for m in oracles]
        r_logits = [predict_np(m, ds, ctx.device)[0] for m in runs]
        for role in ("unlearned", "original"):
            if role not in ctx.models:
                continue
            lo, y = ctx.logits.get((role, s)) or predict_np(ctx.models[role], ds, ctx.device)
            res = oracle_margin_summary(lo, y, o_logits, r_logits if role == "unlearned" else None)
            per.setdefault(role, {})[f"klom_abs_z_mean_{s}"] = res["abs_z_mean"]
            per[role][f"klom_abs_z_q90_{s}"] = res["abs_z_q90"]
            if role == "unlearned":
                if "kl_of_margins_mean" in res:
                    per[role][f"klom_kl_of_margins_{s}"] = res["kl_of_margins_mean"]
                extras[s] = res
            else:
                extras[f"{s}_original"] = {k: res[k] for k in ("abs_z_mean", "abs_z_q90", "hist_model")}
    return {"per_model": per, "extras": {"margin": "logit-scaled confidence (§2.3)", **extras}}


AUDITS.register("oracle_margins")(
    Audit(
        "oracle_margins",
        _audit_oracle_margins,
        "KLoM-style oracle-distribution score: per-example margins against K retrained oracles "
        "(|z| summary, leave-one-out null of the oracles; extra_models: retrained_runs)",
        "8.1",
        needs_logits=frozenset({"forget", "test"}),
        needs_extra=("retrained_runs",),
        outputs=tuple(
            info
            for s in SPLITS
            for info in (
                _audit_info(
                    f"klom_abs_z_mean_{s}", "-", False, "8.1", f"mean |z| of margins vs K oracles on {s}", gap=False
                ),
                _audit_info(f"klom_abs_z_q90_{s}", "-", False, "8.1", f"90 % quantile of |z| on {s}", gap=False),
                _audit_info(
                    f"klom_kl_of_margins_{s}", "nats", False, "8.1", f"mean KL of margin Gaussians on {s}", gap=False
                ),
            )
        ),
    )
)
