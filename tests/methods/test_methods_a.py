"""Distinctive mechanics of retrain, FT, GA, NegGrad+, RL, FF, IU and l1-sparse (methods.md §1–§6)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from unlearnkit.methods import Batch, Phase, RunContext, UnlearnData, create_method, frozen_copy
from unlearnkit.methods._common import magnitude_prune_masks, per_sample_grad_chunks
from unlearnkit.methods.fisher import HEAD_VAR_CLAMP, VAR_CLAMP
from unlearnkit.methods.influence import reference_ihvp, woodfisher_ihvp
from unlearnkit.methods.l1_sparse import l1_schedule
from unlearnkit.methods.random_label import wrong_labels
from unlearnkit.methods.retrain import reinitialize_
from unlearnkit.testing import tiny_data, tiny_model
from unlearnkit.training import accuracy


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return tiny_model(trained=True)


@pytest.fixture(scope="module")
def data() -> UnlearnData:
    return tiny_data()


def run(name: str, model: nn.Module, data: UnlearnData, seed: int = 0, **cfg) -> nn.Module:
    return create_method(name, **cfg).unlearn(
        copy.deepcopy(model), data, RunContext("cpu", seed, original=frozen_copy(model))
    )


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=False))


def mean_ce(model: nn.Module, ds) -> float:
    model.eval()
    with torch.no_grad():
        x = ds.images.float() / 255
        return float(F.cross_entropy(model(x), ds.targets))


# ------------------------------------------------------------------------------------------ FT, GA, retrain
@pytest.mark.parametrize("name", ["ft", "ga", "neggrad_plus", "rl", "l1_sparse"])
def test_lr_zero_leaves_parameters_unchanged(name: str, trained: nn.Module, data: UnlearnData) -> None:
    out = run(
        name,
        trained,
        data,
        epochs=1,
        lr=0.0,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=32,
        **({"gamma": 0.0} if name == "l1_sparse" else {}),
    )
    for (k, a), b in zip(trained.named_parameters(), out.parameters(), strict=False):
        assert torch.equal(a, b), k


def test_ga_increases_forget_loss_and_never_touches_retain(trained: nn.Module, data: UnlearnData) -> None:
    before = mean_ce(trained, data.forget)
    out = run("ga", trained, data, epochs=2, lr=1e-3, batch_size=16)
    assert mean_ce(out, data.forget) > before


def test_ft_does_not_raise_forget_accuracy(trained: nn.Module) -> None:
    d = tiny_data("random:0.25")
    out = run("ft", trained, d, epochs=3, lr=0.05, batch_size=32)
    assert accuracy(out, d.forget) <= accuracy(trained, d.forget)
    assert accuracy(out, d.retain) >= 98


def test_retrain_reinitialises_deterministically(trained: nn.Module) -> None:
    a, b, c = (reinitialize_(copy.deepcopy(trained), s) for s in (1, 1, 2))
    assert same_weights(a, b) and not same_weights(a, c)
    assert not torch.equal(a.head.weight, trained.head.weight)
    state = torch.get_rng_state()
    reinitialize_(copy.deepcopy(trained), 5)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_retrain_trains_on_retain_only(trained: nn.Module, data: UnlearnData) -> None:
    out = run("retrain", trained, data, epochs=15, batch_size=32, lr=0.05, schedule="onecycle", augment=False)
    assert accuracy(out, data.forget) == 0.0  # class 1 never seen: never predicted
    assert accuracy(out, data.retain) >= 95


# ------------------------------------------------------------------------------------------------ NegGrad+
def test_neggrad_plus_loss_is_weighted_difference(trained: nn.Module, data: UnlearnData) -> None:
    method = create_method("neggrad_plus", beta=0.7)
    xf, yf = data.forget.images[:8].float() / 255, data.forget.targets[:8]
    xr, yr = data.retain.images[:8].float() / 255, data.retain.targets[:8]
    model = copy.deepcopy(trained).eval()
    out = method.loss(model, Batch(forget=(xf, yf), retain=(xr, yr)), Phase("p", "paired_retain"), RunContext())
    expected = 0.7 * F.cross_entropy(model(xr), yr) - 0.3 * F.cross_entropy(model(xf), yf)
    assert math.isclose(float(out.loss.detach()), float(expected.detach()), rel_tol=1e-6)
    assert out.logs["forget_loss"] > 0


def test_neggrad_plus_l2_to_original_penalty(trained: nn.Module, data: UnlearnData) -> None:
    method = create_method("neggrad_plus", beta=1.0, l2_to_original=2.0)
    model = copy.deepcopy(trained).eval()
    ctx = RunContext()
    method.setup(model, data, ctx)
    with torch.no_grad():
        model.head.bias.add_(0.5)  # ‖θ − θ_o‖² = 4 · 0.25 = 1
    x, y = data.retain.images[:8].float() / 255, data.retain.targets[:8]
    out = method.loss(model, Batch(forget=(x, y), retain=(x, y)), Phase("p", "paired_retain"), ctx)
    expected = F.cross_entropy(model(x), y) + 0.5 * 2.0 * 4 * 0.25
    assert math.isclose(float(out.loss.detach()), float(expected.detach()), rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------------- RL
def test_wrong_labels_never_equal_the_true_label() -> None:
    y = torch.arange(1000) % 7
    g = torch.Generator().manual_seed(0)
    z = wrong_labels(y, 7, g)
    assert (z != y).all() and z.min() >= 0 and z.max() <= 6
    assert len(torch.unique(z[y == 3])) == 6  # every wrong class is drawn


def test_rl_fixed_wrong_relabels_every_forget_sample(trained: nn.Module, data: UnlearnData) -> None:
    method = create_method("rl", variant="fixed_wrong")
    method.setup(copy.deepcopy(trained), data, RunContext())
    n_f = len(data.forget)
    assert len(method.union_) == n_f + len(data.retain)
    assert (method.union_.targets[:n_f] != data.forget.targets).all()
    assert torch.equal(method.union_.targets[n_f:], data.retain.targets)


def test_rl_sequential_schedule_alternates(trained: nn.Module, data: UnlearnData) -> None:
    phases = [p.source for p in create_method("rl", epochs=2).schedule()]
    assert phases == ["forget", "retain", "forget", "retain"]
    out = run("rl", trained, data, epochs=3, lr=0.05, batch_size=32)
    assert accuracy(out, data.forget) < 50 and accuracy(out, data.retain) >= 85


# ---------------------------------------------------------------------------------------------------- FF
def test_ff_noise_variance_formula() -> None:
    method = create_method("ff", alpha=0.5)
    w = torch.zeros(4, 3)  # a head weight: K = 4 rows
    fisher = torch.tensor([[1e-12, 1.0, 4.0], [0.5, 0.5, 0.5], [1e-3, 1e-3, 1e-3], [2.0, 2.0, 2.0]])
    mu, var = method.noise_variance("head.weight", w, fisher, 4, (2,), is_head=True)
    inv = (1 / (fisher + 1e-8)).clamp(max=VAR_CLAMP).clamp(max=HEAD_VAR_CLAMP) * 0.5
    expected = inv.mean(1, keepdim=True).expand(4, 3) * 10
    expected[2] = 1e-4 * 10  # the forgotten class's row
    assert torch.allclose(var, expected) and var[0, 0] == var[0, 2]  # averaged over inputs
    assert (mu[2] == 0).all()
    # a non-head 1-d tensor: clamp at 1e3, ×10; a non-head matrix: no ×10
    b = torch.ones(5)
    _, vb = method.noise_variance("bn.bias", b, torch.full((5,), 1e-9), 4, (2,), is_head=False)
    assert torch.allclose(vb, torch.full((5,), 0.5 * 1e3 * 10))
    m = torch.ones(5, 2)
    mu_m, vm = method.noise_variance("fc.weight", m, torch.tensor([[1.0, 3.0]] * 5), 4, (2,), is_head=False)
    assert torch.allclose(vm, torch.full((5, 2), 0.5 * (1 / (1 + 1e-8) + 1 / (3 + 1e-8)) / 2)) and torch.equal(mu_m, m)


def test_ff_alpha_zero(trained: nn.Module) -> None:
    random = tiny_data("random:0.2")
    out = run("ff", trained, random, alpha=0.0, max_samples=16)
    assert same_weights(out, trained)  # random mode: exactly unchanged
    classwise = tiny_data("class:1")
    out = run("ff", trained, classwise, alpha=0.0, max_samples=16)
    for (k, a), b in zip(trained.named_parameters(), out.parameters(), strict=False):
        if k.startswith("head."):
            others = [c for c in range(4) if c != 1]
            assert torch.equal(a[others], b[others])
            assert not torch.equal(a[1], b[1])
        else:
            assert torch.equal(a, b), k
    row = torch.cat([out.head.weight[1], out.head.bias[1:2]]).detach()
    assert abs(float(row.mean())) < 0.03 and 0.5 * math.sqrt(1e-3) < float(row.std()) < 1.6 * math.sqrt(1e-3)


def test_ff_reference_parity_zeroes_last_row_in_random_mode(trained: nn.Module) -> None:
    d = tiny_data("random:0.2")
    clean = run("ff", trained, d, alpha=0.0, max_samples=16)
    parity = run("ff", trained, d, alpha=0.0, max_samples=16, reference_parity=True)
    assert torch.equal(clean.head.weight, trained.head.weight)
    assert not torch.equal(parity.head.weight[3], trained.head.weight[3])
    assert torch.equal(parity.head.weight[:3], trained.head.weight[:3])


def test_ff_per_sample_fisher_matches_a_loop(trained: nn.Module, data: UnlearnData) -> None:
    model = copy.deepcopy(trained).eval()
    sub = data.retain.subset(range(5))
    d = UnlearnData(forget=data.forget, retain=sub, split=data.split, num_classes=4)
    fisher = create_method("ff", augment_for_statistics=False).fisher_diagonal(model, d, RunContext())
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(5):
        x = sub.images[i : i + 1].float() / 255
        logits = model(x)
        p = F.softmax(logits, 1).detach()
        for k in range(4):
            grads = torch.autograd.grad(
                F.cross_entropy(logits, torch.tensor([k])), list(model.parameters()), retain_graph=True
            )
            for (n, _), g in zip(model.named_parameters(), grads, strict=False):
                expected[n] += p[0, k] * g**2
    for n in expected:
        assert torch.allclose(fisher[n], expected[n] / 5, rtol=1e-4, atol=1e-10), n


def test_ff_batch_fisher_option_runs(trained: nn.Module, data: UnlearnData) -> None:
    out = run("ff", trained, data, fisher_batch_size=32, alpha=1e-8)
    # the forgotten class's head row is replaced by small noise; the other rows barely move at this alpha
    assert float(out.head.weight[1].detach().abs().max()) < 0.2 < float(trained.head.weight[1].detach().abs().max())
    others = [0, 2, 3]
    assert torch.allclose(out.head.weight[others], trained.head.weight[others], atol=0.05)


# ---------------------------------------------------------------------------------------------------- IU
def _reference_loop(v: torch.Tensor, grads: list[torch.Tensor], n: int) -> torch.Tensor:
    """methods.md §5 step 5, line by line."""
    k, o = v.clone(), None
    for idx, g in enumerate(grads):
        if o is None:
            o = g.clone()
        else:
            t = o @ g
            k = k - ((k @ g) / (n + t)) * o
            o = o - (t / (n + t)) * o
        if idx > n:
            break
    return k


def test_reference_recursion_matches_methods_md() -> None:
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(6, generator=g, dtype=torch.float64) for _ in range(10)]
    v = torch.randn(6, generator=g, dtype=torch.float64)
    assert torch.equal(reference_ihvp(v, iter(grads), 5), _reference_loop(v, grads, 5))
    # it uses n + 2 samples (the reference breaks after index n + 1)
    assert torch.equal(reference_ihvp(v, iter(grads), 5), reference_ihvp(v, iter(grads[:7]), 5))
    assert not torch.equal(reference_ihvp(v, iter(grads), 5), reference_ihvp(v, iter(grads[:6]), 5))


def test_exact_woodfisher_equals_the_inverse_on_a_tiny_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh(), nn.Linear(3, 2)).double()  # 47 parameters
    x = torch.randn(40, 1, 3, 4, dtype=torch.float64)
    y = torch.randint(0, 2, (40,))
    names = [n for n, _ in model.named_parameters()]
    grads = torch.cat(list(per_sample_grad_chunks(model, x, y, names)))
    # the vmap gradients equal batch-size-1 autograd
    g0 = torch.autograd.grad(F.cross_entropy(model(x[:1]), y[:1]), list(model.parameters()))
    assert torch.allclose(grads[0], torch.cat([t.reshape(-1) for t in g0]))
    n, lam = 30, 0.5
    v = torch.randn(grads.shape[1], dtype=torch.float64)
    exact = torch.linalg.solve(lam * torch.eye(len(v), dtype=torch.float64) + grads[:n].T @ grads[:n] / n, v)
    assert torch.allclose(woodfisher_ihvp(v, iter(grads), n, lam), exact, rtol=1e-8, atol=1e-10)


def test_iu_alpha_zero_and_small_step(trained: nn.Module, data: UnlearnData) -> None:
    assert same_weights(run("iu", trained, data, alpha=0.0), trained)
    out = run("iu", trained, data, alpha=0.05, num_samples=64, augment_for_statistics=False)
    assert not same_weights(out, trained)
    assert mean_ce(out, data.forget) > mean_ce(trained, data.forget)  # soft check of methods.md §5
    assert accuracy(out, data.retain) >= accuracy(trained, data.retain) - 5


def test_iu_exact_option_runs_and_differs(trained: nn.Module, data: UnlearnData) -> None:
    a = run("iu", trained, data, alpha=0.05, num_samples=32)
    b = run("iu", trained, data, alpha=0.05, num_samples=32, ihvp="exact_woodfisher")
    assert not same_weights(a, b)


# --------------------------------------------------------------------------------------------- l1-sparse
def test_l1_schedule_decays_linearly() -> None:
    assert l1_schedule(1.0, 4) == [1.0, 0.75, 0.5, 0.25]
    assert l1_schedule(2.0, 5, no_l1_epochs=2) == pytest.approx([2.0, 2 * 2 / 3, 2 / 3, 0.0, 0.0])
    phases = list(create_method("l1_sparse", epochs=3, gamma=0.3).schedule())
    assert [p.gamma for p in phases] == pytest.approx([0.3, 0.2, 0.1])
    assert all(p.source == "retain" and p.epochs == 1 for p in phases)


def test_l1_gamma_zero_is_ft_and_gamma_sparsifies(trained: nn.Module, data: UnlearnData) -> None:
    cfg = {"epochs": 3, "lr": 0.05, "batch_size": 32}
    ft = run("ft", trained, data, **cfg)
    assert same_weights(run("l1_sparse", trained, data, gamma=0.0, **cfg), ft)

    def small(m: nn.Module) -> float:
        w = torch.cat([p.detach().reshape(-1) for p in m.parameters()])
        return float((w.abs() < 1e-3).float().mean())

    assert small(run("l1_sparse", trained, data, gamma=5e-3, **cfg)) > small(ft)


def test_l1_loss_adds_gamma_times_l1_norm(trained: nn.Module, data: UnlearnData) -> None:
    from unlearnkit.methods.l1_sparse import L1Phase

    model = copy.deepcopy(trained).eval()
    x, y = data.retain.images[:8].float() / 255, data.retain.targets[:8]
    out = create_method("l1_sparse").loss(
        model, Batch(retain=(x, y)), L1Phase("e", "retain", 1, gamma=0.01), RunContext()
    )
    l1 = sum(float(p.detach().abs().sum()) for p in model.parameters())
    assert math.isclose(
        float(out.loss.detach()), float(F.cross_entropy(model(x), y).detach()) + 0.01 * l1, rel_tol=1e-5
    )


def test_omp_mask_sparsity_is_exact_and_kept(trained: nn.Module, data: UnlearnData) -> None:
    rate = 0.9
    conv = [m.weight for m in trained.modules() if isinstance(m, nn.Conv2d)]
    total = sum(w.numel() for w in conv)
    masks = magnitude_prune_masks(trained, rate)
    assert sum(int((m == 0).sum()) for m in masks.values()) == round(rate * total)
    kept = torch.cat(
        [w.detach().abs().reshape(-1)[m.reshape(-1) > 0] for w, m in zip(conv, masks.values(), strict=False)]
    )
    dropped = torch.cat(
        [w.detach().abs().reshape(-1)[m.reshape(-1) == 0] for w, m in zip(conv, masks.values(), strict=False)]
    )
    assert kept.min() >= dropped.max()  # global magnitude ranking
    out = run("l1_sparse", trained, data, epochs=2, lr=0.05, batch_size=32, prune_rate=rate)
    zeros = sum(int((m.weight == 0).sum()) for m in out.modules() if isinstance(m, nn.Conv2d))
    assert zeros == round(rate * total)  # weight decay and momentum did not revive pruned weights
    assert not torch.equal(out.head.weight, trained.head.weight)  # the head is never pruned, but is trained
    assert (out.head.weight != 0).all()
