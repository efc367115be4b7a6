"""U-LiRA-lite (evaluation.md §3.3): per-example likelihood-ratio attack on unlearned shadow models.

Question: given an unlearned model, was example x trained-on-then-unlearned, or never seen? Each shadow
j is trained on ``B ∪ {x ∈ P : b_j(x) = 1}`` and then unlearned with ``D_f = {x ∈ P : b_j(x) = 1}``; the
statistic φ (logit-scaled confidence) of every pool example is recorded on the *unlearned* shadow.
Evaluation is leave-one-model-out: each shadow in turn is the target and the Gaussians are fitted on the
others. With ``Unlearn := Retrain`` the two groups have the same law and the AUC must be ≈ 0.5.

`ulira_from_statistics` is the functional core (arrays in, numbers out); `build_ulira_shadows` trains
and unlearns the shadows with callables you pass, so it stays cheap on tiny data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from . import functional as F

__all__ = ["UliraShadows", "build_ulira_shadows", "ulira_from_statistics", "ulira_lite"]


@dataclass
class UliraShadows:
    """Unlearned shadow models and which pool examples each one trained on (then unlearned).

    Attributes:
        models: the N_sh unlearned shadow models θ_j^u.
        pool: indices of the target pool P in the training set.
        in_mask: (N_sh, |P|) bool, ``b_j(x)``: True = trained-then-unlearned, False = never seen.
    """

    models: list[Any]
    pool: np.ndarray
    in_mask: np.ndarray


def _log_normal(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    s = np.asarray(sigma) + 1e-30
    return -0.5 * np.log(2 * np.pi * s**2) - 0.5 * ((x - mu) / s) ** 2


def ulira_from_statistics(
    phi: Any, in_mask: Any, *, fix_variance: bool = True, fprs: tuple[float, ...] = (0.01, 0.001)
) -> dict[str, Any]:
    """Leave-one-model-out U-LiRA over a (N_sh, n) matrix of φ and the (N_sh, n) membership mask.

    Args:
        phi: φ(θ_j^u, x) for every shadow j and pool example x.
        in_mask: True where x was trained-then-unlearned in shadow j.
        fix_variance: one global std per group (recommended when N_sh < 64), else per-example stds.
        fprs: FPRs at which TPR is reported (NaN below the resolution of the negatives).

    Returns:
        ``ulira_auc``, ``ulira_balanced_accuracy`` (%), ``ulira_tpr_at_fpr_<f>``, the number of scored
        pairs, and ``per_example_auc_quantiles`` (the spread of per-example vulnerability).
    """
    x = F.as_numpy(phi, np.float64)
    m = F.as_numpy(in_mask).astype(bool)
    if x.ndim != 2 or x.shape != m.shape:
        raise ConfigError(f"phi and in_mask must both be (N_shadow, n_pool), got {x.shape} and {m.shape}")
    n_sh = x.shape[0]
    if n_sh < 4:
        raise ConfigError(f"U-LiRA needs at least 4 shadow models, got {n_sh}")
    if not np.isfinite(x).all():
        raise ConfigError("U-LiRA statistics contain NaN or inf")
    scores = np.full(x.shape, np.nan)
    for j in range(n_sh):
        others = np.arange(n_sh) != j
        xo, mo = x[others], m[others]
        n_in, n_out = mo.sum(0), (~mo).sum(0)
        ok = (n_in > 0) & (n_out > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu_in = np.where(mo, xo, 0).sum(0) / np.maximum(n_in, 1)
            mu_out = np.where(~mo, xo, 0).sum(0) / np.maximum(n_out, 1)
            if fix_variance:
                d_in = (xo - mu_in)[mo & ok[None, :]]
                d_out = (xo - mu_out)[~mo & ok[None, :]]
                s_in = float(np.sqrt(np.mean(d_in**2))) if d_in.size else 1.0
                s_out = float(np.sqrt(np.mean(d_out**2))) if d_out.size else 1.0
            else:
                s_in = np.sqrt(np.where(mo, (xo - mu_in) ** 2, 0).sum(0) / np.maximum(n_in, 1))
                s_out = np.sqrt(np.where(~mo, (xo - mu_out) ** 2, 0).sum(0) / np.maximum(n_out, 1))
        lam = _log_normal(x[j], mu_in, s_in) - _log_normal(x[j], mu_out, s_out)
        scores[j] = np.where(ok, lam, np.nan)
    valid = np.isfinite(scores)
    pos, neg = scores[valid & m], scores[valid & ~m]
    if len(pos) == 0 or len(neg) == 0:
        raise ConfigError("U-LiRA found no scorable in/out pairs; use more shadows or a larger pool")
    out: dict[str, Any] = {
        "ulira_auc": F.roc_auc(pos, neg),
        "ulira_balanced_accuracy": F.balanced_accuracy_best(pos, neg),
        "n_pairs": int(valid.sum()),
        "n_shadow": n_sh,
        "n_pool": int(x.shape[1]),
        "variance": "global" if fix_variance else "per_example",
    }
    for f in fprs:
        out[f"ulira_tpr_at_fpr_{f:g}"] = F.tpr_at_fpr(pos, neg, f)
    per_ex = []
    for i in range(x.shape[1]):
        v = valid[:, i]
        p, q = scores[v & m[:, i], i], scores[v & ~m[:, i], i]
        if len(p) and len(q):
            per_ex.append(F.roc_auc(p, q))
    if per_ex:
        qs = np.quantile(per_ex, [0.1, 0.5, 0.9])
        out["per_example_auc_quantiles"] = {"0.1": float(qs[0]), "0.5": float(qs[1]), "0.9": float(qs[2])}
    return out


def build_ulira_shadows(
    train_set: Any,
    pool: Any,
    n_shadow: int,
    *,
    train_fn: Callable[[Any, int], Any],
    unlearn_fn: Callable[[Any, Any, Any, int], Any],
    seed: int = 0,
) -> UliraShadows:
    """Train and unlearn ``n_shadow`` shadows with the "target pool" design of §3.3.

    Args:
        train_set: the training `ImageDataset` (``D_tr``).
        pool: indices of the target pool P inside ``train_set``; ``B = D_tr \\ P`` is always trained on.
        n_shadow: N_sh (U-LiRA-lite: 16–32).
        train_fn: ``train_fn(dataset, seed) -> model``, the recipe of the original model.
        unlearn_fn: ``unlearn_fn(model, forget_set, retain_set, seed) -> model``, the method under test with
            its hyper-parameters (for the sanity check pass a retrain-from-scratch function).
        seed: seeds the Bernoulli(½) membership draws and the per-shadow seeds.
    """
    pool = np.asarray(pool, dtype=np.int64)
    rng = np.random.default_rng(seed)
    base = np.setdiff1d(np.arange(len(train_set)), pool)
    in_mask = rng.random((n_shadow, len(pool))) < 0.5
    models = []
    for j in range(n_shadow):
        trained_idx = np.sort(np.concatenate([base, pool[in_mask[j]]]))
        model = train_fn(train_set.subset(trained_idx), seed + 1000 * (j + 1))
        forget = train_set.subset(pool[in_mask[j]])
        retain = train_set.subset(base)
        models.append(unlearn_fn(model, forget, retain, seed + 1000 * (j + 1)))
    return UliraShadows(models, pool, in_mask)


def ulira_lite(
    shadows: UliraShadows, train_set: Any, *, device: Any = "cpu", fix_variance: bool = True, batch_size: int = 1024
) -> dict[str, Any]:
    """U-LiRA-lite from unlearned shadows: φ of every pool example on every shadow, then the LOMO attack."""
    from ..training import predict_logits

    ds = train_set.subset(shadows.pool)
    phi = []
    for model in shadows.models:
        logits, labels = predict_logits(model, ds, batch_size=batch_size, device=device)
        if not np.isfinite(logits.numpy()).all():
            raise ConfigError("a U-LiRA shadow model produces non-finite logits")
        phi.append(F.logit_scaled_confidence(logits, labels))
    return ulira_from_statistics(np.stack(phi), shadows.in_mask, fix_variance=fix_variance)
