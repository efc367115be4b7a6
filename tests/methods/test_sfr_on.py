"""Mechanics of SFR-on (methods.md §10.12): weights, schedule, mask placement, Fisher cache, behaviour."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from unlearnkit.errors import ConfigError, DivergenceError
from unlearnkit.methods import RunContext, UnlearnData, create_method, sfr_on
from unlearnkit.methods.sfr_on import SFRon, alpha_at, forget_weights
from unlearnkit.testing import tiny_data, tiny_model

TINY = {"n_iters": 6, "forget_freq": 2, "batch_size": 16, "fisher_cache": False}


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return tiny_model(trained=True)


@pytest.fixture(scope="module")
def data() -> UnlearnData:
    return tiny_data("class:1")


def run(model: torch.nn.Module, data: UnlearnData, seed: int = 0, method: SFRon | None = None, **cfg):
    method = method or create_method("sfr_on", **{**TINY, **cfg})
    ctx = RunContext.local("cpu", seed=seed)
    out = method.unlearn(copy.deepcopy(model), data, ctx)
    return out, ctx


def same_params(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))


# ------------------------------------------------------------------------------------ adaptive weights
def test_weights_average_to_one_and_favour_low_loss():
    losses = torch.tensor([0.01, 0.3, 1.0, 2.5, 9.0], requires_grad=True)
    w = forget_weights(losses, lam=0.5)
    assert not w.requires_grad
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[:-1] > w[1:])  # strictly decreasing in the loss
    # w ∝ ℓ^{-λ}: the ratio of two weights is the inverse ratio of the losses to the power λ
    assert (w[0] / w[2]).item() == pytest.approx((1.0 / 0.01) ** 0.5, rel=1e-5)
    # larger λ concentrates more weight on the lowest-loss sample
    assert forget_weights(losses, lam=2.0)[0] > w[0]


def test_lambda_zero_gives_equal_weights_and_plain_ga_loss(data, trained):
    w = forget_weights(torch.tensor([0.01, 0.5, 7.0]), lam=0.0)
    assert torch.allclose(w, torch.ones(3))
    m = create_method("sfr_on", lam=0.0)
    x = torch.stack([data.forget[i][0] for i in range(8)])
    y = torch.tensor([data.forget[i][1] for i in range(8)])
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(trained(x), y)
        assert m.forget_loss(trained, x, y).item() == pytest.approx(plain.item(), rel=1e-6)


# ------------------------------------------------------------------------------------ schedules
def test_forget_steps_every_kth_iteration(data, trained):
    calls: list[int] = []

    class Recording(SFRon):
        def forget_step(self, model, batch, alpha, optimizer, ctx):
            calls.append(len(ctx_ref.history))
            return super().forget_step(model, batch, alpha, optimizer, ctx)

    method = Recording(Recording.Config(**{**TINY, "n_iters": 10, "forget_freq": 3}))
    ctx_ref = RunContext.local("cpu", seed=0)
    method.unlearn(copy.deepcopy(trained), data, ctx_ref)
    assert calls == [0, 3, 6, 9]
    assert [t for t, h in enumerate(ctx_ref.history) if h["forget_step"]] == [0, 3, 6, 9]
    assert [t for t, h in enumerate(ctx_ref.history) if "forget_loss" in h] == [0, 3, 6, 9]
    assert len(ctx_ref.history) == 10  # one remain step per iteration
    assert all(math.isfinite(h["retain_loss"]) for h in ctx_ref.history)


def test_alpha_follows_cosine_schedule(data, trained):
    n, k, a0 = 12, 4, 25.0
    _, ctx = run(trained, data, n_iters=n, forget_freq=k, alpha0=a0)
    got = {t: h["alpha"] for t, h in enumerate(ctx.history) if h["forget_step"]}
    assert got == pytest.approx({t: a0 * (1 + math.cos(math.pi * t / n)) / 2 for t in (0, 4, 8)})
    assert got[0] == a0
    # lr: per-iteration cosine over n_iters
    assert [h["lr"] for h in ctx.history] == pytest.approx(
        [0.01 * (1 + math.cos(math.pi * t / n)) / 2 for t in range(n)]
    )
    _, ctx = run(trained, data, n_iters=n, forget_freq=k, alpha0=a0, decay_alpha=False)
    assert {h["alpha"] for h in ctx.history if h["forget_step"]} == {a0}
    assert alpha_at(1499, 1500, 25.0) < 1e-3 * 25.0


# ------------------------------------------------------------------------------------ the mask
def test_mask_touches_only_the_forget_step(data, trained):
    moved = {"forget": [], "remain": []}

    class Probe(SFRon):
        def _probe(self, kind, model, step):
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            out = step()
            masked_out = sum(
                int(((p.detach() != before[n]) & (self.mask_[n] == 0)).sum()) for n, p in model.named_parameters()
            )
            masked_in = sum(
                int(((p.detach() != before[n]) & (self.mask_[n] == 1)).sum()) for n, p in model.named_parameters()
            )
            moved[kind].append((masked_in, masked_out))
            return out

        def forget_step(self, model, batch, alpha, optimizer, ctx):
            return self._probe(
                "forget", model, lambda: super(Probe, self).forget_step(model, batch, alpha, optimizer, ctx)
            )

        def remain_step(self, model, batch, optimizer, ctx):
            return self._probe("remain", model, lambda: super(Probe, self).remain_step(model, batch, optimizer, ctx))

    # momentum and weight decay off: otherwise a zero gradient still moves a weight (methods.md §10.12.4)
    cfg = {**TINY, "n_iters": 4, "forget_freq": 1, "momentum": 0.0, "weight_decay": 0.0, "gamma": 1.0}
    _, ctx = run(trained, data, method=Probe(Probe.Config(**cfg)))
    assert 0.05 < ctx.history[0]["mask_fraction"] < 0.95  # a genuinely partial mask
    assert len(moved["forget"]) == len(moved["remain"]) == 4
    assert all(out == 0 and into > 0 for into, out in moved["forget"])
    assert all(out > 0 for _, out in moved["remain"])  # the remain step updates masked-out weights too


def test_empty_mask_reduces_to_retain_descent(data, trained):
    # γ = ∞ masks every weight: the forget steps change nothing but BatchNorm statistics, which the α_0 = 0
    # run shares, so both runs give the same weights (momentum and weight decay off).
    base = {"momentum": 0.0, "weight_decay": 0.0, "forget_freq": 1}
    a, _ = run(trained, data, gamma=math.inf, **base)
    b, _ = run(trained, data, alpha0=0.0, **base)
    assert same_params(a, b)
    c, _ = run(trained, data, gamma=1.0, **base)
    assert not same_params(a, c)
    # the same holds for the joint ablation: there the mask applies to the forget part of the gradient only
    a, _ = run(trained, data, gamma=math.inf, interleave=False, **base)
    b, _ = run(trained, data, alpha0=0.0, interleave=False, **base)
    assert same_params(a, b)


def test_ablations_change_the_result(data, trained):
    ref, ctx = run(trained, data)
    no_mask, ctx_nm = run(trained, data, use_mask=False)
    joint, ctx_j = run(trained, data, interleave=False)
    ga, _ = run(trained, data, lam=0.0)
    assert ctx_nm.history[0]["mask_fraction"] == 1.0 and ctx.history[0]["mask_fraction"] < 1.0
    for other in (no_mask, joint, ga):
        assert not same_params(ref, other)
    assert len(ctx_j.history) == TINY["n_iters"]


# ------------------------------------------------------------------------------------ Fisher cache
def test_fisher_cache_is_reused(data, trained, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path))
    calls = []
    real = sfr_on.fisher_diagonal
    monkeypatch.setattr(sfr_on, "fisher_diagonal", lambda *a, **k: calls.append(1) or real(*a, **k))
    run(trained, data, fisher_cache=False)
    assert not (tmp_path / "fisher").exists()
    assert len(calls) == 2  # forget and retain
    first, _ = run(trained, data, fisher_cache=True)
    assert len(calls) == 4
    files = list((tmp_path / "fisher").rglob("*.safetensors"))
    assert len(files) == 1
    second, _ = run(trained, data, fisher_cache=True)
    assert len(calls) == 4  # nothing recomputed: read from the cache
    assert same_params(first, second)
    # a new γ reuses the same Fishers; a different model does not
    run(trained, data, fisher_cache=True, gamma=3.0)
    assert len(calls) == 4
    run(tiny_model(seed=1), data, fisher_cache=True)
    assert len(calls) == 6
    # a damaged cache file is recomputed (with a one-line warning naming the entry), never trusted
    files[0].write_bytes(b"garbage")
    with pytest.warns(RuntimeWarning, match=f"discarding cache entry fisher/{files[0].name}"):
        third, _ = run(trained, data, fisher_cache=True)
    assert len(calls) == 8
    assert same_params(first, third)


# ------------------------------------------------------------------------------------ contract odds
def test_deterministic_and_seed_dependent(data, trained):
    a, _ = run(trained, data, seed=3)
    b, _ = run(trained, data, seed=3)
    c, _ = run(trained, data, seed=4)
    assert same_params(a, b)
    assert not same_params(a, c)


def test_max_steps_truncates_without_changing_schedules(data, trained):
    _, ctx = run(trained, data, n_iters=10, max_steps=3)
    assert len(ctx.history) == 3
    assert ctx.history[2]["lr"] == pytest.approx(0.01 * (1 + math.cos(math.pi * 2 / 10)) / 2)


def test_divergence_guard(data, trained):
    # the NaN path: the retain-drop guard (which would stop first) is off
    wild = {"alpha0": 1e6, "max_norm": None, "lr": 5.0, "forget_freq": 1, "n_iters": 10, "max_retain_drop": 100.0}
    with pytest.raises(DivergenceError, match="sfr_on"):
        run(trained, data, **wild)
    with pytest.warns(RuntimeWarning, match="Rolled back"):
        out, _ = run(trained, data, on_divergence="rollback", **wild)
    assert same_params(out, trained)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"forget_freq": 0}, "forget_freq must be ≥ 1"),
        ({"epochs": 3}, "set n_iters"),
        ({"lam": -1.0}, "lam"),
        ({"slow_weight_beta": 0.0}, "slow_weight_beta"),
        ({"max_norm": 0.0}, "max_norm"),
        ({"gama": 1.0}, "did you mean 'gamma'"),
    ],
)
def test_config_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        create_method("sfr_on", **bad)


def test_presets():
    m = create_method("sfr_on", dataset="cifar10", model="resnet18", kind="random")
    c = m.config
    assert (c.lr, c.n_iters, c.forget_freq, c.alpha0, c.lam, c.gamma, c.max_norm, c.batch_size) == (
        0.01,
        1500,
        5,
        25.0,
        0.5,
        1.0,
        7.0,
        128,
    )
    t = create_method("sfr_on", preset="tinyimagenet.swin_t.random").config
    assert (t.optimizer, t.lr, t.weight_decay, t.n_iters, t.forget_freq, t.alpha0, t.lam) == (
        "adamw",
        2e-5,
        0.05,
        500,
        1,
        500.0,
        0.6,
    )
    for kind in ("class", "random"):
        for model in ("small_cnn", "resnet18"):
            create_method("sfr_on", dataset="fashion_mnist", model=model, kind=kind)


# ------------------------------------------------------------------------------------ behaviour
@pytest.mark.slow
def test_digits_classwise_forgets_class_3(digits_original):
    from unlearnkit.data.splits import split_for
    from unlearnkit.training import accuracy

    bundle, original = digits_original.bundle, digits_original.model  # shared by the test run (conftest)
    split = split_for(bundle, "class:3", 0)
    d = UnlearnData(
        forget=bundle.train.subset(split.forget),
        retain=bundle.train.subset(split.retain),
        test=bundle.test,
        split=split,
        augment=bundle.info.augment,
        num_classes=10,
    )
    method = create_method("sfr_on", dataset="digits", model="small_cnn", kind="class", fisher_cache=False)
    out = method.unlearn(copy.deepcopy(original), d, RunContext.local("cpu", seed=0))
    assert accuracy(out, d.forget) <= 5.0
    assert abs(accuracy(out, d.retain) - accuracy(original, d.retain)) <= 5.0
