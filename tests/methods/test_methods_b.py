"""Batch-B methods: SalUn, Bad Teacher, SCRUB, Boundary Shrink / Expanding, SSD.

Unit tests check each method's defining rule on tiny, hand-made inputs; the `slow` tests check the behaviour
on digits (class-wise forgetting of class 3) with the `[digits.small_cnn.class]` presets.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearnkit.data.loading import iter_batches
from unlearnkit.methods import Batch, Phase, RunContext, UnlearnData, create_method, frozen_copy
from unlearnkit.methods._saliency import global_topk_mask, trainable_parameters
from unlearnkit.methods.boundary import adversarial_examples, neighbour_labels
from unlearnkit.methods.ssd import dampen
from unlearnkit.testing import tiny_data, tiny_model
from unlearnkit.training import accuracy


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return tiny_model(trained=True)


def _ctx(model: nn.Module, seed: int = 0) -> RunContext:
    return RunContext("cpu", seed, original=frozen_copy(model))


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainable_parameters(model).items()}


# ------------------------------------------------------------------------------------------------- SalUn
def test_global_topk_mask_keeps_floor_ratio_largest_entries_with_positional_ties():
    scores = {"a": torch.tensor([5.0, 1.0, 3.0]), "b": torch.tensor([[3.0, 0.0], [4.0, 2.0]])}
    masks = global_topk_mask(scores, 0.5)  # P = 7, floor(3.5) = 3 entries kept
    assert masks["a"].tolist() == [1.0, 0.0, 1.0]  # 5 and the first 3 (ties broken by position)
    assert masks["b"].tolist() == [[0.0, 0.0], [1.0, 0.0]]  # 4
    assert sum(int(m.sum()) for m in global_topk_mask(scores, 0.3).values()) == 2  # floor(2.1)


def test_salun_mask_has_floor_ratio_ones_on_the_most_salient_entries(trained):
    data = tiny_data("random:0.25")
    m = create_method("salun", mask_ratio=0.3, batch_size=16)
    model = copy.deepcopy(trained)
    m.setup(model, data, _ctx(trained))
    total = sum(t.numel() for t in m.mask_.values())
    assert total == sum(p.numel() for p in trained.parameters())
    assert sum(int(t.sum()) for t in m.mask_.values()) == math.floor(0.3 * total)
    # The kept entries are the largest |Σ_b ∇ L_b| computed by hand.
    grads = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    model.eval()
    for x, y in iter_batches(data.forget, 16):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in model.named_parameters():
            grads[n] += p.grad
    sal = torch.cat([grads[n].abs().flatten() for n in m.mask_])
    keep = torch.cat([m.mask_[n].flatten() for n in m.mask_]).bool()
    assert sal[keep].min() >= sal[~keep].max()


def test_salun_masked_gradients_are_zero_and_frozen_weights_do_not_move_under_plain_sgd(trained):
    data = tiny_data("random:0.25")
    m = create_method(
        "salun", mask_ratio=0.5, momentum=0.0, weight_decay=0.0, reference_parity=True, lr=0.5, batch_size=16
    )
    model, ctx = copy.deepcopy(trained), _ctx(trained)
    m.setup(model, data, ctx)
    opt = m.make_optimizer(model)
    before = _params(model)
    model.train()
    phase = Phase("forget_random_labels", "forget")  # RL's random-label pass over the forget set
    batch = next(m.batches(phase, data, ctx))
    m.training_step(model, batch, phase, opt, ctx)
    moved_inside = 0
    for n, p in trainable_parameters(model).items():
        frozen = m.mask_[n] == 0
        assert torch.all(p.grad[frozen] == 0), n  # after_backward zeroed them
        assert torch.equal(p.detach()[frozen], before[n][frozen]), n  # no reset needed with plain SGD
        moved_inside += int((p.detach() != before[n])[~frozen].sum())
    assert moved_inside > 0


def test_salun_restore_keeps_frozen_weights_bit_identical_despite_momentum_and_weight_decay(trained):
    data = tiny_data("class:1")
    kw = {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.05}
    probe = create_method("salun", **kw)
    probe.setup(copy.deepcopy(trained), data, _ctx(trained))  # the mask does not depend on the RNG
    mask = {n: t.clone() for n, t in probe.mask_.items()}
    theta0 = _params(trained)

    clean = create_method("salun", **kw).unlearn(copy.deepcopy(trained), data, _ctx(trained))
    parity = create_method("salun", reference_parity=True, **kw).unlearn(copy.deepcopy(trained), data, _ctx(trained))
    frozen_changed_parity, trained_changed = 0, 0
    for n, p in trainable_parameters(clean).items():
        frozen = mask[n] == 0
        assert torch.equal(p.detach()[frozen], theta0[n][frozen]), n
        trained_changed += int((p.detach() != theta0[n])[~frozen].sum())
        q = trainable_parameters(parity)[n].detach()
        frozen_changed_parity += int((q != theta0[n])[frozen].sum())
    assert trained_changed > 0
    assert frozen_changed_parity > 0  # weight decay and momentum move "frozen" weights without the reset


def test_salun_fixed_wrong_labels_never_equal_the_true_label(trained):
    data = tiny_data("random:0.25")
    m = create_method("salun", variant="fixed_wrong")
    m.setup(copy.deepcopy(trained), data, _ctx(trained))
    n_f = len(data.forget)
    assert torch.all(m.union_.targets[:n_f] != data.forget.targets)
    assert torch.equal(m.union_.targets[n_f:], data.retain.targets)
    assert [p.source for p in m.schedule()] == [m.union_]  # RL's relabelled union, as a Phase source


# --------------------------------------------------------------------------------------------------- SCRUB
def test_scrub_max_steps_only_in_the_first_msteps_epochs_and_min_steps_every_epoch(trained):
    data = tiny_data("random:0.25")  # 32 forget, 96 retain
    m = create_method(
        "scrub", epochs=4, msteps=2, forget_batch_size=8, batch_size=32, lr_milestones=[2], lr_decay=0.5, lr=1e-3
    )
    seen: list[tuple[int, str, float]] = []
    loss = m.loss

    def recording_loss(model, batch, phase, ctx):
        seen.append((ctx.epoch, phase.name, m.lr_at(0, 1, ctx.epoch)))
        return loss(model, batch, phase, ctx)

    m.loss = recording_loss  # type: ignore[method-assign]
    m.unlearn(copy.deepcopy(trained), data, _ctx(trained))
    for epoch in (1, 2):
        names = [p for e, p, _ in seen if e == epoch]
        assert names == ["max"] * 4 + ["min"] * 3  # ceil(32/8) max-steps, then ceil(96/32) min-steps
    for epoch in (3, 4):
        assert [p for e, p, _ in seen if e == epoch] == ["min"] * 3
    assert {e for e, _, _ in seen} == {1, 2, 3, 4}
    assert {lr for e, _, lr in seen if e <= 2} == {1e-3} and {lr for e, _, lr in seen if e > 2} == {5e-4}
    assert [p.name for p in create_method("scrub", epochs=3, msteps=0).schedule()] == ["min"] * 3


def test_scrub_max_step_pushes_the_student_away_from_the_teacher_on_the_forget_set(trained):
    from unlearnkit.methods.scrub import kl_teacher_student

    data = tiny_data("class:1")
    x, _ = next(iter_batches(data.forget, 1000))
    kls = []
    for msteps in (0, 1):  # min-steps with zero weights: only the max-steps (if any) act
        m = create_method(
            "scrub", epochs=1, msteps=msteps, lr=0.01, forget_batch_size=8, batch_size=32, alpha=0.0, gamma=0.0
        )
        student = m.unlearn(copy.deepcopy(trained), data, _ctx(trained))
        with torch.no_grad():
            kls.append(float(kl_teacher_student(trained.eval()(x), student(x), 4.0)))
    assert kls[1] > 1e-2 and kls[1] > 20 * kls[0]


def test_scrub_rewind_returns_the_epoch_whose_forget_error_is_closest_to_the_held_out_error(trained):
    from unlearnkit.errors import ConfigError

    data = tiny_data("random:0.25")
    kw = {"epochs": 3, "msteps": 3, "lr": 0.01, "forget_batch_size": 8, "batch_size": 32, "lr_milestones": [9]}
    with pytest.raises(ConfigError, match="test"):
        create_method("scrub", rewind=True, **kw).unlearn(
            copy.deepcopy(trained), UnlearnData(forget=data.forget, retain=data.retain, split=data.split), _ctx(trained)
        )
    # A run of e epochs is the prefix of a longer run with the same seed, so it is the epoch-e checkpoint.
    per_epoch = [
        create_method("scrub", **{**kw, "epochs": e, "rewind": False}).unlearn(
            copy.deepcopy(trained), data, _ctx(trained)
        )
        for e in (1, 2, 3)
    ]
    e_ref = 100 - accuracy(per_epoch[-1], data.test)
    gaps = [abs(100 - accuracy(m, data.forget) - e_ref) for m in per_epoch]
    ctx = _ctx(trained)
    out = create_method("scrub", rewind=True, **kw).unlearn(copy.deepcopy(trained), data, ctx)
    best = gaps.index(min(gaps))  # ties: the earliest epoch
    assert all(torch.equal(v, per_epoch[best].state_dict()[k]) for k, v in out.state_dict().items())
    assert ctx.history[-1]["rewind_epoch"] == best + 1


# ---------------------------------------------------------------------------------------------- Bad Teacher
def test_bad_teacher_targets_are_competent_on_retain_and_incompetent_on_forget(trained):
    data = tiny_data("class:1")
    m = create_method("bt", temperature=2.0, batch_size=16, retain_fraction=0.5)
    ctx = _ctx(trained)
    m.setup(copy.deepcopy(trained), data, ctx)
    (phase,) = m.schedule()
    batches = [m.split_batch(b) for b in m.batches(phase, data, ctx)]
    assert sum(len(b.forget[1]) for b in batches) == len(data.forget)
    assert sum(len(b.retain[1]) for b in batches) == round(0.5 * len(data.retain))
    batch = next(b for b in batches if len(b.forget[1]) and len(b.retain[1]))
    q_f, q_r = m.soft_targets(batch)
    with torch.no_grad():
        assert torch.allclose(q_r, F.softmax(trained.eval()(batch.retain[0]) / 2.0, dim=1))
        assert torch.allclose(q_f, F.softmax(m.incompetent_(batch.forget[0]) / 2.0, dim=1))
        # The incompetent teacher is a fresh random network, not the original.
        assert not torch.allclose(q_f, F.softmax(trained(batch.forget[0]) / 2.0, dim=1), atol=1e-2)
    head_o, head_i = trained.head.weight, m.incompetent_.head.weight
    assert not torch.allclose(head_o, head_i)
    assert torch.equal(m.incompetent_.normalize.mean, trained.normalize.mean)  # normalisation kept


def test_bad_teacher_moves_the_student_towards_the_incompetent_teacher_on_forget(trained):
    data = tiny_data("class:1")
    m = create_method("bt", epochs=5, lr=1e-2, batch_size=16)
    ctx = _ctx(trained)
    m.setup(copy.deepcopy(trained), data, ctx)
    bad = m.incompetent_
    x, _ = next(iter_batches(data.forget, 1000))

    def kl_to_bad(model: nn.Module) -> float:
        with torch.no_grad():
            return float(F.kl_div(F.log_softmax(model.eval()(x), 1), F.softmax(bad(x), 1), reduction="batchmean"))

    student = m.unlearn(copy.deepcopy(trained), data, _ctx(trained))  # same seed: the same incompetent teacher
    assert kl_to_bad(student) < 0.5 * kl_to_bad(trained)


# ------------------------------------------------------------------------------------------------------ SSD
def test_ssd_dampening_rule_on_hand_made_importances():
    theta = torch.tensor([1.0, -2.0, 3.0, 4.0, 5.0, -6.0])
    i_f = torch.tensor([1.0, 10.0, 10.0, 0.0, 100.0, 10.0])
    i_d = torch.tensor([1.0, 1.0, 0.5, 0.0, 2.0, 1.9])
    p = {"w": theta.clone()}
    counts = dampen(p, {"w": i_f}, {"w": i_d}, alpha=5.0, lam=1.0)
    # selected where I_f > 5·I_D: entries 1, 2, 4 (entry 5: 10 > 9.5 too); β = min(I_D / I_f, 1)
    expected = torch.tensor([1.0, -2.0 * 0.1, 3.0 * 0.05, 4.0, 5.0 * 0.02, -6.0 * 0.19])
    assert torch.allclose(p["w"], expected)
    assert counts == {"w": 4}
    assert p["w"][0] == theta[0] and p["w"][3] == theta[3]  # unselected entries bit-identical
    big = {"w": theta.clone()}
    dampen(big, {"w": i_f}, {"w": i_d}, alpha=5.0, lam=100.0)  # β capped at 1: nothing grows
    assert torch.equal(big["w"], theta)
    zero = {"w": theta.clone()}
    dampen(zero, {"w": i_f}, {"w": i_d}, alpha=5.0, lam=0.0)
    assert zero["w"].tolist() == [1.0, 0.0, 0.0, 4.0, 0.0, 0.0]
    inf = {"w": theta.clone()}
    dampen(inf, {"w": i_f}, {"w": i_d}, alpha=math.inf, lam=1.0)
    assert torch.equal(inf["w"], theta)


def test_ssd_changes_only_selected_parameters_shrinking_them_without_sign_flips(trained):
    data = tiny_data("class:1")
    m = create_method("ssd", selection_weighting=2.0, batch_size=16)
    i_f, i_d = m.importances(copy.deepcopy(trained), data, _ctx(trained, seed=3))
    out = m.unlearn(copy.deepcopy(trained), data, _ctx(trained, seed=3))
    before, after = _params(trained), _params(out)
    n_selected = 0
    for n in before:
        sel = i_f[n] > 2.0 * i_d[n]
        n_selected += int(sel.sum())
        assert torch.equal(after[n][~sel], before[n][~sel]), n
        beta = (i_d[n] / i_f[n]).clamp(max=1.0)
        assert torch.allclose(after[n][sel], before[n][sel] * beta[sel]), n
        assert torch.all(after[n].abs() <= before[n].abs())
        assert torch.all(after[n] * before[n] >= 0)
    assert n_selected > 0


# ------------------------------------------------------------------------------------------------- Boundary
def _linear_probe() -> nn.Module:
    """logits = W·x on 2-pixel images: class 1 is the nearest wrong class from (0.6, 0.5)."""
    lin = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_boundary_shrink_relabels_with_the_nearest_wrong_class_found_by_the_attack():
    probe = _linear_probe()
    x = torch.tensor([[0.6, 0.5], [0.9, 0.1]]).view(2, 1, 1, 2)
    y = torch.tensor([0, 0])
    assert probe(x).argmax(1).tolist() == [0, 0]
    x_adv = adversarial_examples(probe, x, y, epsilon=0.1, quantize=False)
    assert torch.allclose(x_adv.view(2, 2), torch.tensor([[0.5, 0.6], [0.8, 0.2]]))  # x + ε·sign(∇_x CE)
    assert neighbour_labels(probe, x, y, epsilon=0.1).tolist() == [1, 0]  # the second attack fails: keeps y
    assert neighbour_labels(probe, x, y, epsilon=0.1, attack="pgd", steps=5).tolist() == [1, 0]
    q = adversarial_examples(probe, x, y, epsilon=0.1)
    assert torch.equal(q, torch.round(q * 255) / 255) and q.min() >= 0 and q.max() <= 1

    m = create_method("boundary_shrink", epsilon=0.1)
    m.probe_ = probe
    student = copy.deepcopy(probe)
    out = m.loss(student, Batch(forget=(x, y)), Phase("shrink", "forget"), RunContext())
    assert torch.allclose(out.loss, F.cross_entropy(student(x), torch.tensor([1, 0])))
    assert out.logs["attack_success"] == 0.5


def test_boundary_methods_are_class_wise_only(trained):
    from unlearnkit.errors import IncompatibleError

    for name in ("boundary_shrink", "boundary_expand"):
        with pytest.raises(IncompatibleError, match="class"):
            create_method(name, epochs=1).unlearn(copy.deepcopy(trained), tiny_data("random:0.25"), _ctx(trained))


def test_boundary_expand_trains_into_a_shadow_class_then_prunes_it(trained):
    data = tiny_data("class:1")
    m = create_method("boundary_expand", epochs=5, lr=0.05, batch_size=16)
    widths: list[int] = []
    widened = m.widened_logits

    def recording_logits(model, x):
        logits = widened(model, x)
        widths.append(logits.shape[1])
        return logits

    m.widened_logits = recording_logits  # type: ignore[method-assign]
    out = m.unlearn(copy.deepcopy(trained), data, _ctx(trained))
    assert widths and set(widths) == {5}  # K + 1 logits while training (the target is the shadow class 4)
    assert out.head.out_features == 4
    x, _ = next(iter_batches(data.forget, 1000))
    assert out(x).shape == (len(x), 4)
    assert accuracy(out, data.forget) < accuracy(trained, data.forget)

    parity = create_method("boundary_expand", epochs=5, lr=0.05, batch_size=16, reference_parity=True)
    wide = parity.unlearn(copy.deepcopy(trained), data, _ctx(trained))
    assert wide.head.out_features == 5
    assert (wide(x).argmax(1) == 4).float().mean() > 0.5  # the unpruned shadow class catches D_f


# ------------------------------------------------------------------------------------ digits behaviour test
@pytest.fixture(scope="module")
def digits_class3(digits_original):
    """The run's shared digits original (conftest) and the class-3 split."""
    from unlearnkit.data import split_for

    bundle, model = digits_original.bundle, digits_original.model
    split = split_for(bundle, "class:3", 0)
    data = UnlearnData(
        forget=bundle.train.subset(split.forget),
        retain=bundle.train.subset(split.retain),
        test=bundle.test,
        split=split,
        augment=bundle.info.augment,
        num_classes=10,
    )
    return model, data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["salun", "bt", "scrub", "boundary_shrink", "boundary_expand", "ssd"])
def test_forgets_digit_3_and_keeps_the_rest(name, digits_class3):
    original, data = digits_class3
    base_retain = accuracy(original, data.retain)
    assert accuracy(original, data.forget) > 95
    method = create_method(name, dataset="digits", model="small_cnn", kind="class")
    out = method.unlearn(copy.deepcopy(original), data, _ctx(original))
    acc_f, acc_r = accuracy(out, data.forget), accuracy(out, data.retain)
    assert acc_f <= 5, f"{name}: forget accuracy {acc_f:.1f}%"
    assert acc_r >= base_retain - 5, f"{name}: retain accuracy {acc_r:.1f}% vs original {base_retain:.1f}%"
