"""Functional cores against independent references (numpy, scipy, scikit-learn, hand-computed values)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax as sp_softmax
from scipy.stats import entropy as sp_entropy
from sklearn.metrics import roc_auc_score, roc_curve

from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import functional as F


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_accuracy_matches_numpy(rng):
    z = rng.normal(size=(200, 5))
    y = rng.integers(0, 5, 200)
    assert F.accuracy(z, y) == pytest.approx(100 * np.mean(np.argmax(z, 1) == y))
    assert F.accuracy(torch.tensor(z), torch.tensor(y)) == pytest.approx(100 * np.mean(np.argmax(z, 1) == y))
    assert math.isnan(F.accuracy(np.zeros((0, 5)), np.zeros(0)))


def test_softmax_is_stable_and_matches_scipy(rng):
    z = rng.normal(size=(50, 7)) * 50 + 1000  # huge logits would overflow a naive exp
    np.testing.assert_allclose(F.softmax(z), sp_softmax(z, axis=1), rtol=1e-12)


def test_confidence_and_entropy(rng):
    z = rng.normal(size=(40, 6))
    y = rng.integers(0, 6, 40)
    p = sp_softmax(z, axis=1)
    np.testing.assert_allclose(F.confidence(z, y, dtype=np.float64), p[np.arange(40), y], rtol=1e-12)
    np.testing.assert_allclose(F.entropy(p), sp_entropy(p, axis=1), rtol=1e-10)
    # zero probabilities are dropped, not NaN
    assert F.entropy(np.array([[1.0, 0.0, 0.0]]))[0] == 0.0


def test_kl_matches_scipy_and_self_is_zero(rng):
    zr, zu = rng.normal(size=(30, 4)) * 3, rng.normal(size=(30, 4)) * 3
    pr, pu = sp_softmax(zr, axis=1), sp_softmax(zu, axis=1)
    np.testing.assert_allclose(F.kl_divergence(zr, zu), sp_entropy(pr, pu, axis=1), rtol=1e-8, atol=1e-12)
    assert np.all(F.kl_divergence(zr, zr) == 0.0)


def test_js_matches_scipy_and_is_bounded(rng):
    za, zb = rng.normal(size=(30, 4)) * 5, rng.normal(size=(30, 4)) * 5
    ref = jensenshannon(sp_softmax(za, axis=1), sp_softmax(zb, axis=1), axis=1) ** 2
    np.testing.assert_allclose(F.js_divergence(za, zb), ref, rtol=1e-6, atol=1e-12)
    far = F.js_divergence(np.array([[100.0, -100.0]]), np.array([[-100.0, 100.0]]))
    assert far[0] <= math.log(2) + 1e-12 and far[0] == pytest.approx(math.log(2), abs=1e-9)


def test_kl_shape_mismatch_raises(rng):
    with pytest.raises(ConfigError, match="same number of classes"):
        F.kl_divergence(rng.normal(size=(3, 4)), rng.normal(size=(3, 5)))


def test_modified_entropy_hand_computed():
    p = np.array([[0.7, 0.2, 0.1]])
    y = np.array([0])
    expect = -(0.3 * math.log(0.7)) - (0.2 * math.log(0.8) + 0.1 * math.log(0.9))
    assert F.modified_entropy(p, y)[0] == pytest.approx(expect, rel=1e-12)


def test_buggy_modified_entropy_matches_the_documented_value(rng):
    # when every class occurs in the evaluated set the buggy value is −Σ_k (1−p_k) log p_k (evaluation.md §1.4)
    p = sp_softmax(rng.normal(size=(12, 3)), axis=1)
    y = np.array([0, 1, 2] * 4)
    np.testing.assert_allclose(F.modified_entropy_buggy(p, y), -((1 - p) * np.log(p)).sum(1), rtol=1e-12)
    assert not np.allclose(F.modified_entropy_buggy(p, y), F.modified_entropy(p, y))


def test_logit_scaled_confidence_precision():
    z = np.array([[40.0, 0.0, 0.0]])  # p_y = 1 − 2e−40·…; 1 − p_y would round to 0
    phi = F.logit_scaled_confidence(z, np.array([0]))[0]
    assert phi == pytest.approx(40.0 - math.log(2.0), rel=1e-9)
    z = np.array([[0.0, 1.0, 2.0]])
    p = sp_softmax(z[0])
    assert F.logit_scaled_confidence(z, np.array([1]))[0] == pytest.approx(math.log(p[1]) - math.log(p[0] + p[2]))


def test_roc_auc_matches_sklearn_with_ties(rng):
    pos = rng.integers(0, 5, 60).astype(float)
    neg = rng.integers(0, 4, 80).astype(float)
    y = np.r_[np.ones(60), np.zeros(80)]
    assert F.roc_auc(pos, neg) == pytest.approx(roc_auc_score(y, np.r_[pos, neg]), abs=1e-12)


def test_tpr_at_fpr_matches_sklearn_roc(rng):
    pos, neg = rng.normal(1, 1, 300), rng.normal(0, 1, 2000)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(300), np.zeros(2000)], np.r_[pos, neg])
    for target in (0.01, 0.001):
        assert F.tpr_at_fpr(pos, neg, target) == pytest.approx(tpr[fpr <= target].max())
    # resolution rule: fewer than 1/FPR negatives -> NaN
    assert math.isnan(F.tpr_at_fpr(pos, neg[:999], 0.001))


def test_binary_roc_endpoints(rng):
    fpr, tpr, _ = F.binary_roc(rng.normal(size=10), rng.normal(size=10))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)


def test_linear_cka_properties_and_reference(rng):
    x = rng.normal(size=(2000, 6))
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert F.linear_cka(x, 3.0 * x @ q) == pytest.approx(1.0, abs=1e-10)  # invariant to rotation and scale
    y = rng.normal(size=(2000, 4))
    xc, yc = x - x.mean(0), y - y.mean(0)
    ref = np.linalg.norm(xc.T @ yc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert F.linear_cka(x, y) == pytest.approx(ref, rel=1e-10)  # n ≥ 1000: biased estimator
    assert F.linear_cka(x[:200], y[:200]) < F.linear_cka(x[:200], y[:200], debiased=False)  # debiased is smaller here
    with pytest.raises(ConfigError, match="same samples"):
        F.linear_cka(x[:10], y[:9])
