"""Heads on frozen features (issue 29): the ridge head's deletions are exact, the certified head's Newton removal
tracks the retrained head and its budget is kept as the paper's formulas say, and a head model round-trips
through the one checkpoint service without ever storing the noise b."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.heads import Budget, CertifiedHead, RidgeHead, c_of, embed, train_head
from unlearnkit.heads.certified import _mean_grad, fit_logistic
from unlearnkit.heads.linear import signs


def _problem(n: int = 300, d: int = 12, k: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, k, (n,), generator=g)
    f = torch.randn(n, d, generator=g) + 2.0 * torch.nn.functional.one_hot(y, d).float()
    return embed(f), y


def _without(x: torch.Tensor, y: torch.Tensor, drop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[drop] = False
    return x[keep], y[keep]


# ------------------------------------------------------------------------------------------------ ridge: exact
@pytest.mark.parametrize(
    ("what", "drop", "update"),
    [
        ("one point", torch.tensor([17]), "woodbury"),
        ("many points", torch.arange(0, 60, 7), "woodbury"),
        ("a whole class", None, "class"),
        ("a class but one point", "class-1", "refactor"),
    ],
)
def test_ridge_deletion_equals_the_head_refitted_without_the_data(
    what: str, drop: torch.Tensor | str | None, update: str
) -> None:
    x, y = _problem()
    if drop is None or isinstance(drop, str):
        drop = torch.nonzero(y == 1).flatten()[: (None if drop is None else -1)]
    head = RidgeHead(3, x.shape[1], lam=0.5).fit(x, y)
    before = head.weight.clone()
    info = head.remove(x[drop], y[drop])
    refit = RidgeHead(3, x.shape[1], lam=0.5).fit(*_without(x, y, drop))
    assert info["update"] == update
    assert (head.weight - refit.weight).abs().max() <= 1e-5, what
    assert (head.weight - before).abs().max() > 1e-4  # the deletion moved the head
    assert int(head.count) == len(x) - len(drop)


def test_ridge_sequential_deletions_stay_exact() -> None:
    x, y = _problem(n=400)
    head = RidgeHead(3, x.shape[1], lam=0.1).fit(x, y)
    gone: list[int] = []
    for start in range(0, 200, 10):  # 20 requests of 2 points each, by Woodbury downdates
        req = torch.tensor([start, start + 3])
        head.remove(x[req], y[req])
        gone += req.tolist()
    refit = RidgeHead(3, x.shape[1], lam=0.1).fit(*_without(x, y, torch.tensor(gone)))
    assert (head.weight - refit.weight).abs().max() <= 1e-5


def test_ridge_refuses_a_bad_lambda() -> None:
    with pytest.raises(ConfigError, match="lam"):
        RidgeHead(3, 5, lam=0.0)


# ---------------------------------------------------------------------------------------- certified: Newton step
def test_newton_removal_tracks_the_retrained_head_and_its_bound_holds() -> None:
    x, y = _problem(n=300)
    lam = 1e-3
    head = CertifiedHead(3, x.shape[1], lam=lam, sigma=1.0, eps=1.0, delta=1e-5)
    b = head.draw_noise(torch.Generator().manual_seed(1))
    head.fit(x, y, b)
    drop = torch.tensor([3, 50, 120])
    x_rem, y_rem = _without(x, y, drop)
    w_new, beta, _ = head.newton_removal(x[drop], y[drop], (x_rem, y_rem))
    retrained, _ = fit_logistic(x_rem, y_rem, 3, lam, b)  # the same b: the head retrained without the data
    gap_newton = float((w_new - retrained).norm())
    gap_stale = float((head.weight - retrained).norm())
    assert gap_newton < 0.1 * gap_stale, (gap_newton, gap_stale)
    # the true gradient residual of L_b on the remaining data (b included) is within the data-dependent bound
    true = _mean_grad(w_new, x_rem, signs(y_rem, 3), b, lam).norm(dim=1) * len(x_rem)
    assert torch.all(true <= beta + head.bound), (true, beta)
    assert torch.all(beta > 0)


def test_training_reaches_a_tiny_gradient_and_b_moves_the_optimum() -> None:
    x, y = _problem(n=200)
    b1 = torch.randn(3, x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w0, r0 = fit_logistic(x, y, 3, 1e-3, torch.zeros_like(b1))
    w1, r1 = fit_logistic(x, y, 3, 1e-3, b1)
    assert float(r0.max()) < 1e-6 and float(r1.max()) < 1e-6
    assert float((w1 - w0).norm()) > 1e-3  # the perturbation is really in the objective


# ------------------------------------------------------------------------------------------- certified: budget
def test_budget_arithmetic_on_hand_computed_numbers() -> None:
    bud = Budget(sigma=2.0, eps=0.5, delta=1e-5)
    c = math.sqrt(2 * math.log(1.5e5))  # 4.8822926...
    assert bud.c == pytest.approx(c) and c_of(1e-5) == pytest.approx(4.882292611689, rel=1e-10)
    assert bud.limit == pytest.approx(2.0 * 0.5 / c)  # 0.204822...
    per_class = torch.tensor([0.03, 0.04], dtype=torch.float64)
    assert Budget.total(per_class) == pytest.approx(0.05)  # √(0.03² + 0.04²)
    assert bud.eps_spent(per_class) == pytest.approx(c * 0.05 / 2.0)
    assert bud.fits(per_class + torch.tensor([0.09, 0.12], dtype=torch.float64))  # 0.2 ≤ 0.2048
    assert not bud.fits(per_class + torch.tensor([0.093, 0.124], dtype=torch.float64))  # 0.205 > 0.2048


def test_budget_accumulates_per_request_then_a_retrain_with_fresh_noise_is_recorded() -> None:
    x, y = _problem(n=300)
    head = CertifiedHead(3, x.shape[1], lam=1e-2, sigma=1.0, eps=1.0, delta=1e-5)
    gen = torch.Generator().manual_seed(5)
    head.fit(x, y, head.draw_noise(gen))
    first_commit, start = head.b_commitment, head.bound.clone()
    alive = torch.ones(len(x), dtype=torch.bool)
    rows = []
    for i in range(3):
        alive[i] = False
        rem = (x[alive], y[alive])
        rows.append(head.remove(x[i : i + 1], y[i : i + 1], lambda: head.draw_noise(gen), remaining=rem))
    assert not any(r["retrained"] for r in rows)
    # the accumulated bound is the per-class running sum of the requests' bounds, combined by the Euclidean norm
    assert rows[-1]["bound_accumulated"] == pytest.approx(Budget.total(head.bound))
    assert all(r2["bound_accumulated"] > r1["bound_accumulated"] for r1, r2 in itertools.pairwise(rows))
    assert rows[0]["bound_before"] == pytest.approx(Budget.total(start))
    for r in rows:
        assert r["budget_remaining"] == pytest.approx(r["budget"] - r["bound_accumulated"])
        assert r["eps_request"] == pytest.approx(r["c"] * (r["bound_accumulated"] - r["bound_before"]) / 1.0)
    # a request that does not fit: the head is retrained on the remaining rows with a fresh b, bounds restart
    head.bound.fill_(head.budget.limit / math.sqrt(3) * 0.999999)
    alive[3] = False
    r = head.remove(x[3:4], y[3:4], lambda: head.draw_noise(gen), remaining=(x[alive], y[alive]))
    assert r["retrained"] and "budget" in r["retrain_reason"]
    assert head.b_commitment != first_commit
    assert r["bound_accumulated"] < 1e-6 and r["eps_request"] == 0.0
    assert int(head.count) == int(alive.sum())


def test_certified_options_are_checked_before_any_compute() -> None:
    for bad, match in (
        ({"eps": 0.0}, "eps"),
        ({"eps": -1.0}, "eps"),
        ({"delta": 1.0}, "delta"),
        ({"sigma": 0}, "sigma"),
    ):
        with pytest.raises(ConfigError, match=match):
            CertifiedHead(3, 5, **bad)


# --------------------------------------------------------------------------------------------- the head model
def test_head_model_deletes_exactly_and_refuses_public_indices() -> None:
    from unlearnkit.testing import tiny_bundle, tiny_model

    b = tiny_bundle()
    backbone = tiny_model(trained=True)
    kw: dict[str, Any] = {"head": "ridge", "trained_on": "public", "cache": False}
    model = train_head(backbone, b.train, indices=range(64, 128), **kw)
    assert model.provenance.scope == "whole model"
    with pytest.raises(IncompatibleError, match="public"):
        model.delete(b.train, [3])  # trained the backbone, not the head
    report = model.delete(b.train, [70, 90, 91])
    assert report.guarantee == "exact" and report.scope == "whole model" and report.deleted == 3
    refit = train_head(backbone, b.train, indices=[i for i in range(64, 128) if i not in (70, 90, 91)], **kw)
    assert (model.head.weight - refit.head.weight).abs().max() <= 1e-5
    with pytest.raises(IncompatibleError, match="already deleted"):
        model.delete(b.train, [70])
    assert torch.equal(model.remaining(), refit.remaining())


def test_ridge_drift_check_refactorises_an_inverse_that_no_longer_matches() -> None:
    x, y = _problem()
    head = RidgeHead(3, x.shape[1], lam=0.5).fit(x, y)
    head.inverse.mul_(1 + 1e-6)  # stands for rounding accumulated over many downdates
    info = head.remove(x[:2], y[:2])
    refit = RidgeHead(3, x.shape[1], lam=0.5).fit(x[2:], y[2:])
    assert info["update"] == "refactor" and (head.weight - refit.weight).abs().max() <= 1e-5


def test_ridge_class_deletion_then_more_deletions_stay_exact() -> None:
    x, y = _problem(n=300)
    head = RidgeHead(3, x.shape[1], lam=0.5).fit(x, y)
    first = torch.nonzero(y == 2).flatten()
    assert head.remove(x[first[:5]], y[first[:5]])["update"] == "woodbury"  # part of class 2
    assert head.remove(x[first[5:]], y[first[5:]])["update"] == "class"  # the rest of class 2: the class path
    more = torch.nonzero(y == 0).flatten()[:2]  # then two points of class 0: the general path again
    assert head.remove(x[more], y[more])["update"] == "woodbury"
    gone = torch.cat([first, more])
    refit = RidgeHead(3, x.shape[1], lam=0.5).fit(*_without(x, y, gone))
    assert (head.weight - refit.weight).abs().max() <= 1e-5
    assert (head.class_gram - refit.class_gram).abs().max() <= 1e-9 and int(head.class_count[2]) == 0
    with pytest.raises(IncompatibleError, match="more points of a class"):
        head.remove(x[first[:1]], y[first[:1]])
