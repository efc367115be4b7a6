"""Membership-inference attacks used as unlearning metrics (evaluation.md §1.4, §1.4b, §3.1, §3.4).

Every function takes per-sample features or scores (numpy arrays) and returns plain numbers; the
metric classes collect the features during the shared forward pass and call these in ``compute``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from . import functional as F

__all__ = [
    "ATTACK_SCORES",
    "attack_scores",
    "kit_loss_logreg_mia",
    "mia_efficacy_svc",
    "mia_entropy_logreg",
    "mia_privacy_svc",
    "population_mia",
    "svc_attack",
]

# C, kernel and gamma of the Sparse/SalUn attacker (§1.4); gamma='auto' = 1 / n_features, not sklearn's 'scale'.
SVC_PARAMS = {"C": 3.0, "kernel": "rbf", "gamma": "auto"}


def _features(x: Any) -> np.ndarray:
    a = F.as_numpy(x)
    if a.ndim == 1:
        a = a[:, None]
    elif a.ndim != 2:
        a = a.reshape(len(a), -1)
    return np.ascontiguousarray(a, dtype=np.float64)


def _unique_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if x.shape[1] == 1:
        u, inv = np.unique(x[:, 0], return_inverse=True)
        return u[:, None], inv.ravel()
    u, inv = np.unique(x, axis=0, return_inverse=True)
    return u, inv.ravel()


def svc_attack(shadow_in: Any, shadow_out: Any, targets: list[Any], *, dedupe: bool = True) -> dict[str, Any]:
    """Fit ``SVC(C=3, rbf, gamma='auto')`` on shadow members (label 1) vs non-members (0); predict targets.

    Args:
        shadow_in: features of the shadow members, shape (n_in,) or (n_in, d).
        shadow_out: features of the shadow non-members.
        targets: feature arrays to label; one prediction vector (0/1) is returned per array.
        dedupe: fit on distinct (feature, label) pairs weighted by their count, and predict each distinct
            target value once. The SVM primal objective is a sum of per-sample hinge losses, so ``k``
            identical samples weigh exactly like one sample with weight ``k``: the fitted model is the
            same up to the solver's tolerance, and saturated confidences (many exact 1.0s) fit much faster.

    Returns:
        ``{"predictions": [...], "degenerate_features": bool}``; ``degenerate_features`` is true when all
        shadow features are identical, so the attacker cannot separate anything and its constant
        prediction is arbitrary (evaluation.md §1.9).
    """
    from sklearn.svm import SVC

    xin, xout = _features(shadow_in), _features(shadow_out)
    if len(xin) == 0 or len(xout) == 0:
        raise ConfigError(f"SVC attack needs shadow members and non-members, got {len(xin)} and {len(xout)}")
    x = np.concatenate([xin, xout])
    y = np.concatenate([np.ones(len(xin)), np.zeros(len(xout))])
    if not np.isfinite(x).all():
        raise ConfigError("MIA features contain NaN or inf; the model's outputs are not finite")
    degenerate = bool(np.all(x == x[0]))
    svc = SVC(**SVC_PARAMS)
    if dedupe:
        xy = np.concatenate([x, y[:, None]], axis=1)
        uxy, inv = _unique_rows(xy)
        weights = np.bincount(inv, minlength=len(uxy)).astype(np.float64)
        svc.fit(uxy[:, :-1], uxy[:, -1], sample_weight=weights)
    else:
        svc.fit(x, y)
    preds = []
    for t in targets:
        xt = _features(t)
        if len(xt) == 0:
            preds.append(np.zeros(0))
            continue
        if dedupe:
            ut, inv = _unique_rows(xt)
            preds.append(svc.predict(ut)[inv])
        else:
            preds.append(svc.predict(xt))
    return {"predictions": preds, "degenerate_features": degenerate}


def mia_efficacy_svc(
    feature_retain: Any, feature_test: Any, feature_forget: Any, *, dedupe: bool = True
) -> dict[str, Any]:
    """MIA-Efficacy of Sparse/SalUn (§1.4): % of forget samples an SVC attacker labels "non-member".

    Args:
        feature_retain: feature of the retain set in its index order; the first ``len(feature_test)``
            rows are the shadow members (``Subset(retain, range(n))`` in the reference).
        feature_test: feature of the test set used for ``accuracy_test`` (shadow non-members).
        feature_forget: feature of the forget set (true labels).
        dedupe: see `svc_attack`.

    Returns:
        ``{"mia_efficacy": percent, "degenerate_features": bool, "n_shadow": n}``.
    """
    ft = _features(feature_test)
    n = len(ft)
    fr = _features(feature_retain)[:n]
    out = svc_attack(fr, ft, [feature_forget], dedupe=dedupe)
    pred = out["predictions"][0]
    eff = float(100.0 * (1.0 - pred.mean())) if len(pred) else float("nan")
    return {"mia_efficacy": eff, "degenerate_features": out["degenerate_features"], "n_shadow": int(min(n, len(fr)))}


def mia_privacy_svc(feature_retain: Any, feature_test: Any, *, dedupe: bool = True) -> dict[str, Any]:
    """``SVC_MIA_training_privacy`` of §1.4: balanced accuracy (%) of a retain-vs-test SVC attacker.

    Shadow = first ``m = |test| // 2`` of retain and of test; targets = the rest of retain and of test.
    50 means no leakage.
    """
    ft, fr = _features(feature_test), _features(feature_retain)
    m = len(ft) // 2
    if m == 0 or len(fr) <= m:
        raise ConfigError(
            f"training-privacy MIA needs ≥ 2 test samples and more retain than test/2 samples, "
            f"got {len(ft)} test and {len(fr)} retain"
        )
    out = svc_attack(fr[:m], ft[:m], [fr[m:], ft[m:]], dedupe=dedupe)
    p_in, p_out = out["predictions"]
    return {
        "mia_privacy": float(100.0 * 0.5 * (p_in.mean() + (1.0 - p_out.mean()))),
        "degenerate_features": out["degenerate_features"],
    }


def mia_entropy_logreg(entropy_retain: Any, entropy_test: Any, entropy_forget: Any) -> dict[str, Any]:
    """SFR-on's MIA (§1.4b): % of forget samples a logistic-regression attacker labels "member".

    Members = the whole retain set, non-members = the test set, feature = entropy of the softmax.
    The reference uses ``LogisticRegression(class_weight='balanced', solver='lbfgs',
    multi_class='multinomial')``; current scikit-learn has no ``multi_class``, and a two-class
    multinomial L2 fit equals a binary fit with ``C`` doubled, hence ``C=2.0`` here.
    """
    from sklearn.linear_model import LogisticRegression

    xin, xout, xt = _features(entropy_retain), _features(entropy_test), _features(entropy_forget)
    if len(xin) == 0 or len(xout) == 0:
        raise ConfigError("entropy MIA needs non-empty retain and test sets")
    x = np.concatenate([xin, xout])
    y = np.concatenate([np.ones(len(xin)), np.zeros(len(xout))])
    degenerate = bool(np.all(x == x[0]))
    clf = LogisticRegression(class_weight="balanced", solver="lbfgs", C=2.0, max_iter=1000)
    clf.fit(x, y)
    pred = clf.predict(xt) if len(xt) else np.zeros(0)
    rate = float(100.0 * pred.mean()) if len(pred) else float("nan")
    return {"member_rate": rate, "degenerate_features": degenerate}


def kit_loss_logreg_mia(loss_forget: Any, loss_test: Any, *, n_splits: int = 10, seed: int = 0) -> float:
    """Competition starting-kit attack (§3.1): CV accuracy (%) of a logistic regression on the 1-D loss.

    Forget losses are shuffled and truncated to the number of test losses (as the kit does), labels
    1 = forget, 0 = test; ``StratifiedShuffleSplit(n_splits, random_state=seed)``; mean test accuracy.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

    lf, lt = F.as_numpy(loss_forget, np.float64).ravel(), F.as_numpy(loss_test, np.float64).ravel()
    rng = np.random.default_rng(seed)
    lf = rng.permutation(lf)[: len(lt)]
    lt = lt[: len(lf)]
    if min(len(lf), len(lt)) < n_splits:
        raise ConfigError(f"loss MIA needs at least {n_splits} forget and test samples")
    x = np.concatenate([lf, lt])[:, None]
    y = np.concatenate([np.ones(len(lf)), np.zeros(len(lt))])
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    return float(100.0 * cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean())


# --------------------------------------------------------------------------------- population attacks
def _score_loss(logits: Any, labels: Any) -> np.ndarray:
    p = F.softmax(logits)
    y = F.as_numpy(labels).astype(np.int64)
    return np.log(np.maximum(p[np.arange(len(y)), y], 1e-45))


def _score_confidence(logits: Any, labels: Any) -> np.ndarray:
    return F.confidence(logits, labels, dtype=np.float64)


def _score_entropy(logits: Any, labels: Any) -> np.ndarray:
    return -F.entropy(F.softmax(logits))


def _score_m_entropy(logits: Any, labels: Any) -> np.ndarray:
    return -F.modified_entropy(F.softmax(logits), labels)


def _score_correctness(logits: Any, labels: Any) -> np.ndarray:
    return F.correctness(logits, labels)


# name -> score function; higher score means "member" (§3.1 table)
ATTACK_SCORES = {
    "loss": _score_loss,
    "confidence": _score_confidence,
    "entropy": _score_entropy,
    "m_entropy": _score_m_entropy,
    "correctness": _score_correctness,
    "lira_global": F.logit_scaled_confidence,
}


def attack_scores(attack: str, logits: Any, labels: Any) -> np.ndarray:
    """Per-sample membership score of ``attack`` (one of `ATTACK_SCORES`); higher means "member"."""
    if attack not in ATTACK_SCORES:
        raise ConfigError(f"unknown population attack {attack!r}; choose from {', '.join(ATTACK_SCORES)}")
    return ATTACK_SCORES[attack](logits, labels)


def population_mia(
    scores_member: Any, scores_nonmember: Any, fprs: tuple[float, ...] = (0.01, 0.001), keep_roc: bool = False
) -> dict[str, Any]:
    """Threshold attack "member iff score ≥ t" over all t (§3.4).

    Returns AUC (Mann–Whitney), TPR at each FPR in ``fprs`` (NaN when the negatives cannot resolve that
    rate), the best balanced accuracy (%), and optionally the ROC arrays.
    """
    out: dict[str, Any] = {
        "auc": F.roc_auc(scores_member, scores_nonmember),
        "balanced_accuracy": F.balanced_accuracy_best(scores_member, scores_nonmember),
    }
    for f in fprs:
        out[f"tpr_at_fpr_{f:g}"] = F.tpr_at_fpr(scores_member, scores_nonmember, f)
    if keep_roc:
        fpr, tpr, _ = F.binary_roc(scores_member, scores_nonmember)
        out["roc"] = {"fpr": fpr, "tpr": tpr}
    return out
