"""The `auto` controller's pieces on hand-made inputs, ASSD's percentile, and `auto` on tiny and digits data."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.methods import create_method
from unlearnkit.methods._auto_control import (
    MUNBA_FALLBACK,
    Measure,
    Snapshots,
    StopRule,
    Targets,
    auc,
    class_mix_sample,
    distance,
    masked_accuracy,
    mcu_beta,
    munba_weights,
    on_target,
)
from unlearnkit.methods.auto import _HeldOutLossMatch, _masked_teacher_objective
from unlearnkit.methods.base import UnlearnData
from unlearnkit.methods.ssd import assd_alpha, assd_percentile
from unlearnkit.runner import run_method
from unlearnkit.testing import tiny_data, tiny_model


# --- MUNBa's bargaining weights --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("gram", "expected"),
    [
        ((4.0, 0.0, 1.0), (0.5, 1.0)),  # orthogonal: 1/|g| each (MUNBa's code expression is 0/0 here)
        ((1.0, 0.5, 1.0), (1 / math.sqrt(1.5), 1 / math.sqrt(1.5))),  # cos ½: 1/√(1 + ½)
        ((9.0, -6.0, 16.0), (1 / (3 * math.sqrt(0.5)), 1 / (4 * math.sqrt(0.5)))),  # cos −½
    ],
)
def test_munba_weights_solve_the_bargaining_equations(gram: tuple[float, float, float], expected) -> None:
    g_rr, g_rf, g_ff = gram
    a_r, a_f, ok = munba_weights(g_rr, g_rf, g_ff)
    assert ok
    assert (a_r, a_f) == pytest.approx(expected)
    # G α = 1/α, the Nash bargaining condition
    assert g_rr * a_r + g_rf * a_f == pytest.approx(1 / a_r)
    assert g_rf * a_r + g_ff * a_f == pytest.approx(1 / a_f)


def test_munba_weights_match_the_reference_expression_where_it_is_defined() -> None:
    g1, g2, g3 = 2.0, 0.7, 5.0  # MUNBa.py: α0 = √((g1g3 − g2√(g1g3)) / (g1²g3 − g1g2²)), α1 = (1 − g1α0²)/(g2α0)
    a0 = math.sqrt((g1 * g3 - g2 * math.sqrt(g1 * g3)) / (g1 * g1 * g3 - g1 * g2 * g2))
    a1 = (1 - g1 * a0 * a0) / (g2 * a0)
    assert munba_weights(g1, g2, g3)[:2] == pytest.approx((a0, a1))


@pytest.mark.parametrize("gram", [(0.0, 0.0, 1.0), (1.0, -1.0, 1.0), (1.0, 0.0, math.nan), (1.0, 0.0, 0.0)])
def test_munba_weights_fall_back_without_a_positive_solution(gram) -> None:
    assert munba_weights(*gram) == (*MUNBA_FALLBACK, False)


# --- MCU's gate ------------------------------------------------------------------------------------------
def test_mcu_beta_levels() -> None:
    assert mcu_beta(forget_acc=80.0, forget_target=85.0, retain_acc=90.0, retain_target=99.0) == 0.0  # met
    # forget gap (90−85)/85 ≈ 0.06 < retain gap (99−80)/99 ≈ 0.19: retain first
    assert mcu_beta(forget_acc=90.0, forget_target=85.0, retain_acc=80.0, retain_target=99.0) == 0.01
    # forget gap 0.06 > retain gap 0.01
    assert mcu_beta(forget_acc=90.0, forget_target=85.0, retain_acc=98.0, retain_target=99.0) == 0.5
    # class request: target 0 divides by the one-point floor, so any open forget gap dominates
    assert mcu_beta(forget_acc=5.0, forget_target=0.0, retain_acc=50.0, retain_target=99.0) == 0.5
    assert mcu_beta(forget_acc=0.0, forget_target=0.0, retain_acc=50.0, retain_target=99.0) == 0.0


# --- targets, distance, stop rule, snapshots ---------------------------------------------------------------
def _targets(kind: str = "class") -> Targets:
    return Targets(kind, retain_acc=99.0, forget_acc=0.0 if kind == "class" else None, forget_loss=2.3,  # type: ignore[arg-type]
                   forget_tolerance=1.0, retain_tolerance=1.0)  # fmt: skip


def _m(step: int, fa: float, ra: float, ha: float = 90.0, auc_: float = 0.5) -> Measure:
    return Measure(step, forget_acc=fa, forget_loss=1.0, retain_acc=ra, holdout_acc=ha, mia_auc=auc_)


def test_a_collapsed_model_is_never_on_target() -> None:
    t = _targets("class")
    assert on_target(_m(1, 0.5, 98.5), t)
    assert not on_target(_m(1, 0.0, 10.0), t)  # forget at 0 because everything is wrong
    assert distance(_m(1, 0.0, 10.0), t) == math.inf  # never chosen as a snapshot
    assert distance(_m(1, 0.0, 95.0), t) == pytest.approx(8.0)  # a retain point costs two forget points


def test_random_targets_follow_the_held_out_accuracy() -> None:
    t = _targets("random")
    assert on_target(_m(1, 90.5, 99.0, ha=90.0), t)
    assert not on_target(_m(1, 95.0, 99.0, ha=90.0), t)
    assert not on_target(_m(1, 80.0, 99.0, ha=90.0), t)  # over-forgetting is off target too (SCRUB+R)
    assert distance(_m(1, 90.0, 99.0, ha=90.0, auc_=0.6), t) == pytest.approx(5.0)  # ½·|0.6 − 0.5|·100


def test_stop_rule() -> None:
    t = _targets("class")
    assert StopRule().update(_m(1, 0.5, 98.5), t) == "targets"
    assert StopRule().update(_m(1, 40.0, 70.0), t) == "retain_collapse"  # 29 points under target
    rule = StopRule(patience=2)
    assert rule.update(_m(1, 30.0, 95.0), t) is None  # best so far
    assert rule.update(_m(2, 31.0, 95.0), t) is None
    assert rule.update(_m(3, 32.0, 95.0), t) == "no_progress"  # two checks without a closer state, retain low
    calm = StopRule(patience=1)
    calm.update(_m(1, 30.0, 99.0), t)
    assert calm.update(_m(2, 30.0, 99.0), t) is None  # no progress, but retain is on target: keep going


def test_snapshots_return_the_state_closest_to_the_targets() -> None:
    t = _targets("class")
    model = torch.nn.Linear(2, 2)
    snaps = Snapshots()
    for step, (fa, ra) in enumerate([(100.0, 99.0), (40.0, 98.0), (2.0, 97.0), (0.0, 60.0)]):
        with torch.no_grad():
            model.weight.fill_(float(step))
        snaps.offer(model, _m(step, fa, ra), t)
    assert snaps.best_step == 2  # 2 + 2 = 4 beats 40 + 1 and 0 + 39
    snaps.restore(model)
    assert torch.all(model.weight == 2.0)
    assert [m.step for m in snaps.trace] == [0, 1, 2, 3]


def test_auc_and_class_mix_sample() -> None:
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])) == 0.5
    from unlearnkit.data.datasets import ImageDataset

    holdout = ImageDataset(torch.zeros(100, 1, 2, 2), torch.arange(100) % 4)
    forget_targets = torch.tensor([0] * 30 + [1] * 10)
    s = class_mix_sample(holdout, forget_targets, 40, torch.Generator().manual_seed(0))
    assert torch.bincount(s.targets, minlength=4).tolist() == [30, 10, 0, 0]


def test_held_out_accuracy_of_the_kept_classes_is_a_target_too() -> None:
    t = Targets("class", retain_acc=99.0, forget_acc=0.0, forget_loss=2.3, forget_tolerance=1.0,
                retain_tolerance=1.0, kept_acc=94.0, kept_tolerance=0.5)  # fmt: skip
    m = Measure(1, forget_acc=0.0, forget_loss=3.0, retain_acc=99.0, holdout_acc=0.0, mia_auc=0.5, kept_acc=93.0)
    assert not on_target(m, t)  # one held-out point short, tolerance ½
    assert distance(m, t) == pytest.approx(2.0)  # a held-out point costs as much as a retain point
    assert on_target(Measure(1, 0.0, 3.0, 99.0, 0.0, 0.5, kept_acc=93.6), t)
    assert distance(Measure(1, 0.0, 3.0, 99.0, 0.0, 0.5, kept_acc=95.0), t) == 0.0  # above target costs nothing


class _Fixed(torch.nn.Module):
    """A 'model' that returns fixed logits per image index (the image's first pixel)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.flatten(1)[:, 0].long()]


def test_masked_accuracy_and_the_masked_teacher_objective() -> None:
    from unlearnkit.data.datasets import ImageDataset

    # image i's logits; labels 1, 2, 0: image 0 is a '1' the model calls '0' (its runner-up is '1')
    logits = torch.tensor([[5.0, 4.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]])
    ds = ImageDataset(torch.arange(3.0).view(3, 1, 1, 1), torch.tensor([1, 2, 0]))
    model = _Fixed(logits)
    assert masked_accuracy(model, ds, (), torch.device("cpu")) == pytest.approx(200 / 3)
    # class 0 masked: image 0 becomes right (its runner-up), image 2 (a '0') can only be wrong
    assert masked_accuracy(model, ds, (0,), torch.device("cpu")) == pytest.approx(200 / 3)
    assert masked_accuracy(model, ds, (2,), torch.device("cpu")) == pytest.approx(100 / 3)
    # the forget objective's targets: the teacher's softmax over the kept classes, 0 on the forgotten one
    teacher = _Fixed(logits)
    objective = _masked_teacher_objective(teacher, (0,))
    loss = objective(model, torch.tensor([[[[0.0]]]]), torch.tensor([0]))
    p = torch.softmax(torch.tensor([4.0, 0.0]), 0)  # classes 1 and 2
    expected = -(p * torch.log_softmax(logits[0], 0)[1:]).sum()
    assert float(loss.detach()) == pytest.approx(float(expected))
    loss.backward()
    assert model.logits.grad[0, 0] > 0  # descending lowers the forgotten class's logit


def test_loss_matching_ascends_only_forget_images_under_their_held_out_rank() -> None:
    from unlearnkit.data.datasets import ImageDataset

    # held-out losses (sorted): the model is sure of half the held-out images, unsure of the other half
    held_logits = torch.tensor([[10.0, 0.0]] * 2 + [[0.0, 0.0]] * 2)
    holdout = ImageDataset(torch.arange(4.0).view(4, 1, 1, 1), torch.zeros(4, dtype=torch.long))
    match = _HeldOutLossMatch(holdout, torch.device("cpu"))
    match.refresh(_Fixed(held_logits))
    assert match.sorted.tolist() == pytest.approx([4.54e-5, 4.54e-5, math.log(2), math.log(2)], rel=1e-2)
    # four forget images, all learnt with confidence: the two least sure get the unsure held-out targets
    forget_logits = torch.tensor([[10.0, 0.0], [9.0, 0.0], [6.0, 0.0], [5.0, 0.0]])
    model = _Fixed(forget_logits)
    x, y = torch.arange(4.0).view(4, 1, 1, 1), torch.zeros(4, dtype=torch.long)
    loss = match(model, x, y)
    loss.backward()
    grad = model.logits.grad[:, 0]
    assert grad[0] == 0 and grad[1] == 0  # ranked with the sure held-out images: already at or under their loss
    assert grad[2] > 0 and grad[3] > 0  # minimising relu(target − ℓ) raises their loss: lower true-class logit


# --- ASSD --------------------------------------------------------------------------------------------------
def test_assd_percentile_and_alpha() -> None:
    assert assd_percentile(10, 100) == pytest.approx(100 - math.log(11))
    assert assd_percentile(0, 100) == 100.0
    i_d = {"w": torch.ones(1000)}
    i_f = {"w": torch.arange(1, 1001, dtype=torch.float)}  # ratios 1..1000
    alpha = assd_alpha(i_f, i_d, 99.0)
    assert alpha == 990.0  # nearest rank: the 990th smallest ratio
    assert int((i_f["w"] > alpha * i_d["w"]).sum()) == 10  # SSD's strict rule then selects the top 1 %
    assert assd_alpha({"w": torch.tensor([1.0, 0.0])}, {"w": torch.tensor([0.0, 0.0])}, 100.0) == math.inf


def test_ssd_threshold_auto_dampens_about_the_percentile_share() -> None:
    d = tiny_data("class:1")
    res = run_method(create_method("ssd", threshold="auto", batch_size=32), tiny_model(trained=True), d, device="cpu")
    last = res.history[-1]
    share = 100.0 * last["dampened"] / last["parameters"]
    n_f = len(d.forget)
    expected = math.log1p(100 * n_f / (n_f + len(d.retain)))  # 100 − percentile
    assert 0 < share <= expected + 1e-6
    assert last["selection_weighting"] != 10.0


# --- auto on tiny data ----------------------------------------------------------------------------------------
def test_auto_needs_held_out_data_and_says_why() -> None:
    d = tiny_data()
    data = UnlearnData(forget=d.forget, retain=d.retain, test=None, split=d.split)
    with pytest.raises(IncompatibleError, match=r"held-out data .*--holdout.*retain set cannot stand in"):
        run_method(create_method("auto"), tiny_model(trained=True), data, device="cpu")


def test_auto_rejects_a_base_it_cannot_split() -> None:
    with pytest.raises(ConfigError, match="auto base must be one of"):
        create_method("auto", base="ssd")


@pytest.mark.parametrize(("base", "weighting"), [("rl", "munba"), ("salun", "mcu"), ("neggrad_plus", "munba")])
def test_auto_forgets_a_tiny_class_and_reports_its_targets(base: str, weighting: str) -> None:
    d = tiny_data("class:1")
    model = tiny_model(trained=True)
    res = run_method(create_method("auto", base=base, weighting=weighting, batch_size=32), model, d, device="cpu")
    reason = res.stop_reason or ""
    assert reason.startswith(f"auto[{base}/{weighting}]") and "target 0% (class)" in reason
    checks = [h for h in res.history if "check_step" in h]
    assert checks and checks[-1]["forget_acc"] < 50.0
    final = res.history[-1]
    assert final["chosen_step"] > 0 and final["target_forget_acc"] == 0.0
    assert final["target_retain_acc"] > 90.0


def test_auto_returns_the_input_and_says_no_op_when_every_state_is_a_wreck() -> None:
    d = tiny_data("class:1")
    model = tiny_model(trained=True)
    # a step length far too large: after 5 steps retain accuracy has collapsed (33 %), although the class is gone
    res = run_method(create_method("auto", lr=5.0, max_steps=10, check_every=5), model, d, device="cpu")
    assert res.report["chosen_step"] == 0 and res.report["stop"] == "retain_collapse"
    assert all(
        torch.equal(a, b) for a, b in zip(model.state_dict().values(), res.model.state_dict().values(), strict=True)
    )
    assert res.outcome == "no_op" and "returned the input" in (res.stop_reason or "")


# --- digits behaviour (slow) ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["class:3", "random:0.1"])
def test_auto_forgets_digits_without_a_retrained_model(digits_original, spec: str) -> None:
    from unlearnkit.data.splits import split_for
    from unlearnkit.training import accuracy

    bundle = digits_original.bundle
    split = split_for(bundle, spec, 0)
    data = UnlearnData.from_split(bundle, split)
    model = copy.deepcopy(digits_original.model)
    res = run_method(create_method("auto"), model, data, device="cpu", seed=0)
    final = res.history[-1]
    assert final["stopped_step"] < 200  # stopped by itself, before the step budget
    assert res.stop_reason is not None and "reached their targets" in res.stop_reason
    forget = accuracy(res.model, data.forget, device="cpu")
    retain = accuracy(res.model, data.retain, device="cpu")
    test_kept = accuracy(res.model, data.test, device="cpu")
    if spec.startswith("class"):
        assert forget <= 2.0
        assert retain >= accuracy(model, data.retain, device="cpu") - 2.0
    else:
        # forgotten like unseen data: forget accuracy near the held-out accuracy, not above training level
        assert forget <= accuracy(model, data.forget, device="cpu")
        assert abs(forget - test_kept) <= 5.0
        assert retain >= accuracy(model, data.retain, device="cpu") - 2.0
