"""Functional cores of the evaluation metrics: pure functions over logits, probabilities and scores.

Every function here takes numpy arrays or torch tensors and returns numpy values, has no state, and is
tested against an independent reference (numpy, scipy, scikit-learn) in ``tests/evaluation``. The
metric classes in `unlearnkit.evaluation.metrics` stream batches into these functions.

Conventions (evaluation.md §0): accuracies in percent, natural logs, probabilities from a softmax
computed after subtracting the max logit.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = [
    "accuracy",
    "as_numpy",
    "binary_roc",
    "confidence",
    "correctness",
    "entropy",
    "js_divergence",
    "kl_divergence",
    "linear_cka",
    "logit_scaled_confidence",
    "modified_entropy",
    "modified_entropy_buggy",
    "roc_auc",
    "softmax",
    "tpr_at_fpr",
]

_KL_EPS = 1e-20  # as in the SFR-on reference code (evaluation.md §1.6)
_PHI_EPS = 1e-45  # as in the competition code (evaluation.md §2.3)


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy view/copy of a tensor, array or list (torch tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    return arr.astype(dtype, copy=False) if dtype is not None else arr


def softmax(logits: Any, dtype: Any = np.float64) -> np.ndarray:
    """Row-wise softmax after subtracting the max logit, in ``dtype`` (float64 by default)."""
    z = as_numpy(logits).astype(dtype, copy=True)
    if z.ndim != 2:
        raise ConfigError(f"logits must be a 2-D array (samples × classes), got shape {z.shape}")
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def correctness(logits: Any, labels: Any) -> np.ndarray:
    """``1[argmax z == y]`` per sample, as float (ties: the first maximal class, like torch/numpy argmax)."""
    z, y = as_numpy(logits), as_numpy(labels).astype(np.int64)
    return (z.argmax(axis=1) == y).astype(np.float64)


def accuracy(logits: Any, labels: Any) -> float:
    """Top-1 accuracy in percent (evaluation.md §1.1); NaN for an empty set."""
    y = as_numpy(labels)
    if len(y) == 0:
        return float("nan")
    return float(100.0 * correctness(logits, y).mean())


def confidence(logits: Any, labels: Any, dtype: Any = np.float32) -> np.ndarray:
    """Softmax probability of the true label ``p_y`` (the MIA-Efficacy feature, §1.4).

    ``dtype`` float32 matches the reference code, which takes the softmax of float32 logits.
    """
    p = softmax(logits, dtype=dtype)
    y = as_numpy(labels).astype(np.int64)
    return p[np.arange(len(y)), y]


def entropy(probs: Any) -> np.ndarray:
    """Shannon entropy ``-Σ p log p`` per row in nats; terms with ``p = 0`` are dropped."""
    p = as_numpy(probs).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1)


def modified_entropy(probs: Any, labels: Any, clip: float = 1e-30) -> np.ndarray:
    """Song & Mittal's modified entropy ``-(1-p_y) log p_y - Σ_{k≠y} p_k log(1-p_k)`` (§3.1).

    Logs are taken of values clipped below at ``clip``.
    """
    p = as_numpy(probs).astype(np.float64)
    y = as_numpy(labels).astype(np.int64)
    rows = np.arange(len(y))
    py = p[rows, y]
    log_one_minus = np.log(np.maximum(1.0 - p, clip))
    other = p * log_one_minus
    other[rows, y] = 0.0
    return -(1.0 - py) * np.log(np.maximum(py, clip)) - other.sum(axis=1)


def modified_entropy_buggy(probs: Any, labels: Any) -> np.ndarray:
    """The m_entropy feature exactly as computed by the Sparse/SalUn/SFR-on code (``reproduce=True`` only).

    Two bugs (evaluation.md §1.4): ``log(1 - p_k)`` is computed as ``log p_k``, and the true-label
    column is replaced by indexing columns with the whole label vector, which overwrites, in every
    row, each column whose class occurs anywhere in the set.
    """
    p = as_numpy(probs).astype(np.float64)
    y = as_numpy(labels).astype(np.int64)
    log_p = np.log(np.maximum(p, 1e-30))
    reverse_p = 1.0 - p
    log_reverse_p = log_p.copy()  # bug (a): should be log(1 - p)
    modified_p = p.copy()
    modified_log = log_reverse_p.copy()
    # bug (b): ``modified[:, y] = ...`` assigns whole columns selected by the label vector
    modified_p[:, y] = reverse_p[:, y]
    modified_log[:, y] = log_p[:, y]
    return -(modified_p * modified_log).sum(axis=1)


def logit_scaled_confidence(logits: Any, labels: Any) -> np.ndarray:
    """LiRA / competition statistic ``φ = log(p_y + ε) - log(Σ_{k≠y} p_k + ε)`` (§2.3), in float64.

    ``Σ_{k≠y} p_k`` is summed with the true class zeroed, never computed as ``1 - p_y``.
    """
    p = softmax(logits, dtype=np.float64)
    y = as_numpy(labels).astype(np.int64)
    rows = np.arange(len(y))
    py = p[rows, y].copy()
    p[rows, y] = 0.0
    return np.log(py + _PHI_EPS) - np.log(p.sum(axis=1) + _PHI_EPS)


def kl_divergence(logits_reference: Any, logits_other: Any) -> np.ndarray:
    """Per-sample ``KL(p_ref ‖ p_other)`` in nats with the +1e-20 of the reference code (§1.6), float64.

    With ``logits_reference`` from the retrained model this is SFR-on's "DKL" direction
    ``KL(retrained ‖ unlearned)``.
    """
    pr = softmax(logits_reference)
    pu = softmax(logits_other)
    if pr.shape != pu.shape:
        raise ConfigError(
            f"cannot compare outputs of shapes {pr.shape} and {pu.shape}; the models must have the "
            "same number of classes and see the same samples"
        )
    return (pr * (np.log(pr + _KL_EPS) - np.log(pu + _KL_EPS))).sum(axis=1)


def js_divergence(logits_a: Any, logits_b: Any) -> np.ndarray:
    """Per-sample Jensen–Shannon divergence in nats (≤ log 2), formula of §1.6, float64."""
    pa, pb = softmax(logits_a), softmax(logits_b)
    if pa.shape != pb.shape:
        raise ConfigError(f"cannot compare outputs of shapes {pa.shape} and {pb.shape}")
    m = 0.5 * (pa + pb)
    log_m = np.log(m + _KL_EPS)
    return 0.5 * (pa * (np.log(pa + _KL_EPS) - log_m)).sum(axis=1) + 0.5 * (pb * (np.log(pb + _KL_EPS) - log_m)).sum(
        axis=1
    )


# ----------------------------------------------------------------------------------------- ROC helpers
def _scores(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray]:
    p = as_numpy(pos, np.float64).ravel()
    n = as_numpy(neg, np.float64).ravel()
    if len(p) == 0 or len(n) == 0:
        raise ConfigError(f"ROC needs at least one positive and one negative score, got {len(p)} and {len(n)}")
    if not (np.isfinite(p).all() and np.isfinite(n).all()):
        raise ConfigError("attack scores contain NaN or inf; check the model's outputs")
    return p, n


def roc_auc(pos: Any, neg: Any) -> float:
    """Area under the ROC curve by Mann–Whitney U (ties count ½); higher scores mean "positive"."""
    from scipy.stats import rankdata

    p, n = _scores(pos, neg)
    ranks = rankdata(np.concatenate([p, n]))  # average ranks handle ties
    u = ranks[: len(p)].sum() - len(p) * (len(p) + 1) / 2.0
    return float(u / (len(p) * len(n)))


def binary_roc(pos: Any, neg: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for "positive iff score ≥ t" over every distinct score, from (0,0) to (1,1)."""
    p, n = _scores(pos, neg)
    thr = np.unique(np.concatenate([p, n]))[::-1]
    ps, ns = np.sort(p), np.sort(n)
    tpr = (len(ps) - np.searchsorted(ps, thr, side="left")) / len(ps)
    fpr = (len(ns) - np.searchsorted(ns, thr, side="left")) / len(ns)
    return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]), np.concatenate([[np.inf], thr]))


def tpr_at_fpr(pos: Any, neg: Any, target_fpr: float) -> float:
    """Largest TPR over thresholds whose FPR ≤ ``target_fpr`` (§3.4).

    NaN when there are fewer than ``1 / target_fpr`` negatives (the rate cannot be resolved).
    """
    p, n = _scores(pos, neg)
    if len(n) < math.ceil(1.0 / target_fpr - 1e-9):
        return float("nan")
    fpr, tpr, _ = binary_roc(p, n)
    ok = fpr <= target_fpr + 1e-12
    return float(tpr[ok].max())


def balanced_accuracy_best(pos: Any, neg: Any) -> float:
    """Best ``½(TPR + TNR)`` over thresholds, in percent (secondary MIA number, §3.4)."""
    fpr, tpr, _ = binary_roc(pos, neg)
    return float(100.0 * (0.5 * (tpr + 1.0 - fpr)).max())


# ----------------------------------------------------------------------------------------------- CKA
def linear_cka(x: Any, y: Any, debiased: bool | None = None) -> float:
    """Linear CKA between two representations of the same n samples (§4.4).

    ``CKA = ‖X_cᵀY_c‖²_F / (‖X_cᵀX_c‖_F ‖Y_cᵀY_c‖_F)`` on column-centred features, computed through
    n×n Gram matrices. ``debiased`` (default: when n < 1000) uses the unbiased HSIC estimator of
    Song et al. (2012), as recommended for small n.
    """
    a = as_numpy(x, np.float64).reshape(len(as_numpy(x)), -1)
    b = as_numpy(y, np.float64).reshape(len(as_numpy(y)), -1)
    n = len(a)
    if n != len(b):
        raise ConfigError(f"CKA needs the same samples for both models, got {n} and {len(b)} rows")
    if n < 4:
        raise ConfigError(f"CKA needs at least 4 samples, got {n}")
    if debiased is None:
        debiased = n < 1000
    a = a - a.mean(axis=0, keepdims=True)
    b = b - b.mean(axis=0, keepdims=True)
    ka, kb = a @ a.T, b @ b.T
    if debiased:
        hab, haa, hbb = _hsic_unbiased(ka, kb), _hsic_unbiased(ka, ka), _hsic_unbiased(kb, kb)
    else:
        hab, haa, hbb = (ka * kb).sum(), (ka * ka).sum(), (kb * kb).sum()
    denom = math.sqrt(max(haa, 0.0) * max(hbb, 0.0))
    return float(hab / denom) if denom > 0 else float("nan")


def _hsic_unbiased(k: np.ndarray, lm: np.ndarray) -> float:
    n = len(k)
    k = k.copy()
    lm = lm.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(lm, 0.0)
    kl = k @ lm
    return float((np.trace(kl) + k.sum() * lm.sum() / ((n - 1) * (n - 2)) - 2.0 * kl.sum() / (n - 2)) / (n * (n - 3)))
