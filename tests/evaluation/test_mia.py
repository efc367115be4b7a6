"""MIA cores: the §1.9 oracles, the dedupe speed-up, SFR-on's logistic regression and population attacks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import mia


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_svc_oracle_from_spec(rng):
    # members U(0.9, 1), non-members U(0, 0.5): forget all 0.05 -> efficacy 100, all 0.99 -> 0 (evaluation.md §1.9)
    retain, test = rng.uniform(0.9, 1, 300), rng.uniform(0, 0.5, 200)
    assert mia.mia_efficacy_svc(retain, test, np.full(50, 0.05))["mia_efficacy"] == 100.0
    assert mia.mia_efficacy_svc(retain, test, np.full(50, 0.99))["mia_efficacy"] == 0.0


def test_svc_uses_only_first_test_size_retain_samples(rng):
    # retain beyond the first |test| items would flip the attack if it were used
    test = rng.uniform(0, 0.5, 100)
    retain = np.r_[rng.uniform(0.9, 1, 100), rng.uniform(0, 0.5, 5000)]
    r = mia.mia_efficacy_svc(retain, test, np.full(20, 0.05))
    assert r["mia_efficacy"] == 100.0 and r["n_shadow"] == 100


def test_svc_matches_plain_sklearn_and_dedupe_is_exact(rng):
    # many exact ties (saturated confidences) as produced by trained models
    retain = np.round(rng.beta(8, 1, 400), 2).astype(np.float32)
    test = np.round(rng.beta(3, 1, 300), 2).astype(np.float32)
    forget = np.round(rng.beta(5, 1, 250), 2).astype(np.float32)
    x = np.r_[retain[:300], test][:, None].astype(np.float64)
    y = np.r_[np.ones(300), np.zeros(300)]
    ref = 100 * (1 - SVC(C=3, kernel="rbf", gamma="auto").fit(x, y).predict(forget[:, None].astype(np.float64)).mean())
    assert mia.mia_efficacy_svc(retain, test, forget, dedupe=False)["mia_efficacy"] == pytest.approx(ref)
    assert mia.mia_efficacy_svc(retain, test, forget, dedupe=True)["mia_efficacy"] == pytest.approx(ref, abs=0.5)


def test_svc_flags_degenerate_features():
    r = mia.mia_efficacy_svc(np.ones(20), np.ones(20), np.ones(5))
    assert r["degenerate_features"] is True
    r = mia.mia_efficacy_svc(np.r_[np.ones(19), 0.5], np.ones(20), np.ones(5))
    assert r["degenerate_features"] is False


def test_svc_rejects_nonfinite_and_empty():
    with pytest.raises(ConfigError, match="NaN or inf"):
        mia.svc_attack(np.array([0.1, np.nan]), np.array([0.2, 0.3]), [np.array([0.1])])
    with pytest.raises(ConfigError, match="shadow members"):
        mia.svc_attack(np.zeros(0), np.array([0.2]), [np.array([0.1])])


def test_privacy_svc_balanced_accuracy(rng):
    retain, test = rng.uniform(0.9, 1, 400), rng.uniform(0, 0.5, 200)
    assert mia.mia_privacy_svc(retain, test)["mia_privacy"] == 100.0
    same = mia.mia_privacy_svc(rng.uniform(0, 1, 2000), rng.uniform(0, 1, 2000))["mia_privacy"]
    assert 40 < same < 60


def test_entropy_logreg_member_rate_matches_sklearn(rng):
    er, et, ef = rng.normal(0.2, 0.1, 500), rng.normal(0.8, 0.2, 200), rng.normal(0.5, 0.3, 100)
    clf = LogisticRegression(class_weight="balanced", C=2.0, max_iter=1000).fit(
        np.r_[er, et][:, None], np.r_[np.ones(500), np.zeros(200)]
    )
    expect = 100 * clf.predict(ef[:, None]).mean()
    assert mia.mia_entropy_logreg(er, et, ef)["member_rate"] == pytest.approx(expect)
    assert mia.mia_entropy_logreg(er, et, np.full(10, 0.1))["member_rate"] == 100.0


def test_population_mia_matches_sklearn(rng):
    s_in, s_out = rng.normal(0.5, 1, 500), rng.normal(0, 1, 1500)
    r = mia.population_mia(s_in, s_out, keep_roc=True)
    assert r["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(500), np.zeros(1500)], np.r_[s_in, s_out]))
    assert 0 < r["tpr_at_fpr_0.01"] < 0.2 and 0 <= r["tpr_at_fpr_0.001"] <= r["tpr_at_fpr_0.01"]
    assert np.isnan(mia.population_mia(s_in, s_out[:800])["tpr_at_fpr_0.001"])  # 800 negatives cannot resolve 0.1%
    assert 50 < r["balanced_accuracy"] <= 100
    assert r["roc"]["fpr"][-1] == 1.0


def test_attack_scores_orientation():
    logits = np.array([[5.0, 0.0], [0.0, 0.0]])  # first: confident & correct (member-like)
    y = np.array([0, 0])
    for a in mia.ATTACK_SCORES:
        s = mia.attack_scores(a, logits, y)
        assert s[0] >= s[1], a
    with pytest.raises(ConfigError, match="unknown population attack"):
        mia.attack_scores("nope", logits, y)


def test_kit_loss_logreg_chance_and_signal(rng):
    assert mia.kit_loss_logreg_mia(rng.exponential(1, 400), rng.exponential(1, 400)) < 62
    assert mia.kit_loss_logreg_mia(rng.exponential(0.05, 400), rng.exponential(2, 400)) > 85
