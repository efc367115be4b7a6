"""The audit without a retrained model says whether the forget set now looks like held-out data (issue 24 item 7)."""

from __future__ import annotations

from unlearnkit.evaluation.without_retrain import looks_held_out


def test_class_requests_are_judged_against_zero_forget_accuracy() -> None:
    assert looks_held_out({"accuracy_forget": 0.5}, classwise=True)["verdict"] == "looks held out"
    out = looks_held_out({"accuracy_forget": 37.0}, classwise=True)
    assert out["verdict"] == "still remembered" and "37.0%" in out["why"]


def test_sample_requests_need_held_out_accuracy_and_a_chance_level_mia() -> None:
    like_test = {"accuracy_forget": 92.0, "accuracy_test": 91.2, "mia_auc_forget_loss": 0.52}
    assert looks_held_out(like_test, classwise=False)["verdict"] == "looks held out"
    memorised = {**like_test, "accuracy_forget": 97.9}  # the original's forget accuracy: 6 points above held-out
    assert looks_held_out(memorised, classwise=False)["verdict"] == "still remembered"
    separable = {**like_test, "mia_auc_forget_loss": 0.61}  # an attacker still tells forget from held-out
    assert looks_held_out(separable, classwise=False)["verdict"] == "still remembered"
    assert looks_held_out({"accuracy_forget": 90.0}, classwise=False)["verdict"] == "unknown"
    assert looks_held_out({}, classwise=False)["verdict"] == "unknown"
