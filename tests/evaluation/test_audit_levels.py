"""Issue 19: audit levels, each audit's recipe against an independent computation, the oracle-margin score,
and the default record's standard audit keys."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import train_test_split

from unlearnkit.audit_models import plan_audit_models
from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.evaluation import EvalOptions, RunInfo, evaluate
from unlearnkit.evaluation import functional as F
from unlearnkit.evaluation.audits import cka_to_retrained, linear_probe, population_mias, roc_points
from unlearnkit.evaluation.levels import AUDIT_LEVELS, resolve_audits
from unlearnkit.evaluation.oracle_margins import margin_scores, oracle_margin_summary, standardized_distance

STANDARD_KEYS = {
    "mia_auc_forget_loss",
    "mia_tpr_at_fpr_0.01_forget_loss",
    "mia_tpr_at_fpr_0.001_forget_loss",
    "probe_accuracy_test",
    "cka_to_retrained_forget",
    "cka_to_retrained_test",
}


# ------------------------------------------------------------------------------------------- levels
def test_resolve_audits_levels_and_names():
    assert resolve_audits("none") == []
    assert resolve_audits(None) == resolve_audits("standard") == ["mia_population", "linear_probe", "cka"]
    strong = resolve_audits("strong")
    assert set(AUDIT_LEVELS["standard"]) < set(strong)
    assert {"relearn_time", "ulira_lite", "competition_lite", "oracle_margins"} <= set(strong)
    assert resolve_audits("none,relearn_time") == ["relearn_time"]
    assert resolve_audits(["standard", "-cka", "relearn_time"]) == ["mia_population", "linear_probe", "relearn_time"]
    assert resolve_audits(" Standard , ") == ["mia_population", "linear_probe", "cka"]


@pytest.mark.parametrize(("bad", "hint"), [("standrd", "standard"), ("linear_prob", "linear_probe"), ("ckaa", "cka")])
def test_unknown_audit_is_a_config_error_with_did_you_mean(bad, hint):
    with pytest.raises(ConfigError, match=rf"did you mean.*{hint}"):
        resolve_audits(bad)
    with pytest.raises(ConfigError, match="unknown audit"):
        resolve_audits("zzz")


def test_plan_audit_models_states_the_cost_first():
    p = plan_audit_models(resolve_audits("strong"), 0, train_seconds=10.0, unlearn_seconds=1.0)
    assert (p.oracles, p.unlearned_runs, p.shadows) == (4, 4, 8)
    assert p.trainings == 2 + 8 and p.unlearnings == 3 + 8
    assert p.estimate_seconds == pytest.approx(10 * 10.0 + 11 * 1.0)
    assert "~111 s" in p.describe()
    assert plan_audit_models(resolve_audits("standard"), 0).trainings == 0
    assert plan_audit_models(resolve_audits("standard"), 5).oracles == 5
    assert plan_audit_models(resolve_audits("strong"), 0, method_kinds=("class",)).shadows == 0
    for bad in (1, 2, -1, True, "3"):
        with pytest.raises(ConfigError, match="oracles"):
            plan_audit_models([], bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- recipes vs independent code
def test_population_mia_matches_sklearn_roc():
    rng = np.random.default_rng(0)
    lf, yf = rng.normal(size=(300, 5)) + np.eye(5)[rng.integers(0, 5, 300)] * 2, rng.integers(0, 5, 300)
    ln, yn = rng.normal(size=(2000, 5)), rng.integers(0, 5, 2000)
    out = population_mias(lf, yf, ln, yn, attacks=("loss",))

    def loss_score(lo, y):  # −CE = log p_y, independently
        lo = lo - lo.max(1, keepdims=True)
        return (lo - np.log(np.exp(lo).sum(1, keepdims=True)))[np.arange(len(y)), y]

    s_in, s_out = loss_score(lf, yf), loss_score(ln, yn)
    labels = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    scores = np.r_[s_in, s_out]
    assert out["mia_auc_forget_loss"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    fpr, tpr, _ = roc_curve(labels, scores)
    for f in (0.01, 0.001):
        assert out[f"mia_tpr_at_fpr_{f:g}_forget_loss"] == pytest.approx(tpr[fpr <= f].max(), abs=1e-9)
    pts = roc_points(*F.binary_roc(s_in, s_out)[:2])
    for g, t in zip(pts["fpr"], pts["tpr"], strict=True):  # the thinned curve is sklearn's upper envelope
        assert t == pytest.approx(tpr[fpr <= g + 1e-12].max(), abs=1e-6)


def _cka_by_hand(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_cka_matches_a_hand_written_linear_cka():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 16))
    y = x @ rng.normal(size=(16, 8)) + 0.5 * rng.normal(size=(1200, 8))
    assert cka_to_retrained(x, y) == pytest.approx(_cka_by_hand(x, y), rel=1e-9)  # n ≥ 1000: biased estimator
    assert F.linear_cka(x[:100], y[:100], debiased=False) == pytest.approx(_cka_by_hand(x[:100], y[:100]), rel=1e-9)
    assert cka_to_retrained(x, x) == pytest.approx(1.0)
    assert cka_to_retrained(x, rng.normal(size=(1200, 8))) < 0.05


def test_linear_probe_matches_its_recipe_in_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    x = rng.normal(size=(400, 6)) + np.eye(4, 6)[y] * 1.5
    out = linear_probe(x, y, seed=3, forgotten_classes=(1,))
    x1, x2, y1, y2 = train_test_split(x, y, test_size=0.5, random_state=3, stratify=y)
    mu, sd = x1.mean(0), x1.std(0)
    pred = LogisticRegression(C=1.0, max_iter=1000).fit((x1 - mu) / sd, y1).predict((x2 - mu) / sd)
    assert out["probe_accuracy_test"] == pytest.approx(100 * (pred == y2).mean())
    assert out["probe_accuracy_test_forgotten_classes"] == pytest.approx(100 * (pred[y2 == 1] == 1).mean())


# ------------------------------------------------------------------------------ oracle-margin score
def test_a_model_that_is_an_oracle_scores_like_the_others():
    rng = np.random.default_rng(3)
    mu, sd = rng.normal(size=200) * 3, rng.uniform(0.5, 2.0, 200)
    oracles = mu + sd * rng.normal(size=(8, 200))
    for j in range(8):
        res = margin_scores(oracles[j], oracles)  # the model IS oracle j: scored against the other 7
        assert res["summary"]["mean"] == pytest.approx(res["null_mean"][j])
        np.testing.assert_allclose(res["abs_z"], np.abs(standardized_distance(oracles[j], np.delete(oracles, j, 0))))
        assert min(res["null_mean"]) <= res["summary"]["mean"] <= max(res["null_mean"])
    fresh = mu + sd * rng.normal(size=200)  # a new draw from the oracles' law: also among them
    r = margin_scores(fresh, oracles)
    assert 0.3 < r["summary"]["mean"] < 1.6 and 0.0 <= r["rank"] <= 1.0
    shifted = margin_scores(mu + 3 * sd, oracles)  # remembers the forget set: margins 3σ too large
    assert shifted["rank"] == 1.0 and shifted["summary"]["mean"] > 2 * max(shifted["null_mean"])


def test_oracle_margin_summary_from_logits_and_kl_of_margins():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 50)
    base = rng.normal(size=(50, 3))

    def draw(shift=0.0):
        lo = base + 0.3 * rng.normal(size=(50, 3))
        lo[np.arange(50), y] += shift
        return lo

    oracles = [draw() for _ in range(5)]
    same = oracle_margin_summary(draw(), y, oracles, [draw() for _ in range(4)])
    far = oracle_margin_summary(draw(4.0), y, oracles, [draw(4.0) for _ in range(4)])
    assert far["abs_z_mean"] > 3 * same["abs_z_mean"]
    assert far["kl_of_margins_mean"] > 10 * same["kl_of_margins_mean"]
    assert sum(same["hist_model"]) == 50 and sum(same["hist_null"]) == 5 * 50
    with pytest.raises(ConfigError, match="K ≥ 3"):
        margin_scores(np.zeros(4), np.zeros((2, 4)))


# ------------------------------------------------------------------------------------ the suite
def test_default_record_gains_standard_audits_and_keeps_every_value(bundle, class_split, original, retrained):
    default = evaluate(original, bundle, class_split, original=original, retrained=retrained, device="cpu")
    plain = evaluate(
        original,
        bundle,
        class_split,
        original=original,
        retrained=retrained,
        device="cpu",
        options=EvalOptions(audits="none"),
    )
    assert default["evaluation_config"]["audits"] == ["mia_population", "linear_probe", "cka"]
    assert plain["evaluation_config"]["audits"] == []
    for role in ("original", "retrained", "unlearned"):
        d, p = default["models"][role]["metrics"], plain["models"][role]["metrics"]
        assert {k: d[k] for k in p} == p  # existing keys, same values
    assert set(default["models"]["unlearned"]["metrics"]) >= STANDARD_KEYS
    assert "probe_accuracy_test_forgotten_classes" in default["models"]["unlearned"]["metrics"]
    assert not STANDARD_KEYS & set(plain["models"]["unlearned"]["metrics"])
    assert default["gaps_to_retrained"]["avg_gap_to_retrained"] == plain["gaps_to_retrained"]["avg_gap_to_retrained"]
    roc = default["extras"]["mia_population"]["roc"]["unlearned"]
    assert len(roc["fpr"]) == len(roc["tpr"]) == 65 and roc["tpr"] == sorted(roc["tpr"])


def test_level_audits_that_cannot_run_are_skipped_named_ones_refused(bundle, class_split, original, retrained):
    rec = evaluate(original, bundle, class_split, device="cpu")  # no retrained model: CKA cannot run
    assert rec["evaluation_config"]["audits"] == ["mia_population", "linear_probe"]
    assert "retrained" in rec["evaluation_config"]["audits_skipped"]["cka"]
    strong = evaluate(
        original,
        bundle,
        class_split,
        original=original,
        retrained=retrained,
        device="cpu",
        options=EvalOptions(audits="strong"),
    )
    skipped = strong["evaluation_config"]["audits_skipped"]
    assert set(skipped) == {"oracle_margins", "ulira_lite", "competition_lite"}
    assert "unlearnkit run --audits strong" in skipped["ulira_lite"]
    with pytest.raises(IncompatibleError, match=r"ulira_lite needs extra_models\['ulira'\].*unlearnkit run"):
        evaluate(
            original, bundle, class_split, retrained=retrained, device="cpu", options=EvalOptions(audits="ulira_lite")
        )


def test_oracle_margins_in_the_record(bundle, class_split, original, retrained, retrained_b):
    oracles = [retrained, retrained_b, original]  # K = 3 models (the third is not an oracle; fine for plumbing)
    rec = evaluate(
        retrained_b,
        bundle,
        class_split,
        original=original,
        retrained=retrained,
        device="cpu",
        run=RunInfo(extra_models={"retrained_runs": oracles}),
        options=EvalOptions(audits="none,oracle_margins"),
    )
    ex = rec["extras"]["oracle_margins"]["forget"]
    assert ex["K"] == 3 and len(ex["null_abs_z_mean_per_oracle"]) == 3
    assert ex["abs_z_mean"] == pytest.approx(ex["null_abs_z_mean_per_oracle"][1])  # it IS oracle 1: left out
    assert rec["models"]["unlearned"]["metrics"]["klom_abs_z_mean_forget"] == pytest.approx(ex["abs_z_mean"])
    assert "klom_abs_z_mean_forget" in rec["models"]["original"]["metrics"]
