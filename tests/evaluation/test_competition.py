"""Competition score (evaluation.md §2): the golden vectors of §2.9 and the estimator's edge cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from unlearnkit.errors import ConfigError
from unlearnkit.evaluation import competition as C

R = [0.0, 1.0, 2.0, 3.0]
DELTA = 1e-5


def test_golden_identical():
    eps = C.epsilon_per_example(R, R)
    assert eps == 0.0 and C.forget_quality([eps], 4) == 1.0


def test_golden_shift_by_one():
    eps = C.epsilon_per_example(R, [1.0, 2.0, 3.0, 4.0])
    assert eps == pytest.approx(math.log(2 - 4 * DELTA), abs=1e-12)
    assert eps == pytest.approx(0.693127, abs=1e-6)
    assert C.forget_quality([eps], 4) == 0.5


def test_golden_perfectly_separable():
    eps = C.epsilon_per_example(R, [10.0, 11.0, 12.0, 13.0])
    assert eps == 50.0 and C.forget_quality([eps], 4) == 0.0


def test_golden_degenerate_spread():
    eps = C.epsilon_per_example(R, [1.5] * 4)
    assert eps == 50.0 and C.forget_quality([eps], 4) == 0.0


def test_golden_bucket_edges_at_n512():
    h = C.h_score([6.49, 6.5, 7.0], 512)
    assert h[0] == 2.0**-12 and h[1] == 2.0**-13 and h[2] == 0.0


def test_golden_score():
    assert C.competition_score(0.5, 90, 100, 80, 80) == pytest.approx(0.45)


@pytest.mark.parametrize(("n", "emax"), [(512, 7), (128, 5), (64, 5), (32, 4), (16, 3), (8, 2), (4, 2)])
def test_epsilon_max_table(n, emax):
    assert C.epsilon_max(n) == emax


def test_needs_four_models():
    with pytest.raises(ConfigError, match="N ≥ 4"):
        C.epsilon_max(3)


def test_boundary_half_is_bucket_one():
    assert C.h_score([0.5, 0.4999], 16).tolist() == [0.5, 1.0]


def test_rule_families_and_vectorised_epsilons():
    rng = np.random.default_rng(0)
    r = rng.normal(0, 1, (16, 6))
    u = rng.normal(0, 1, (16, 6))
    u[:, 0] += 5  # clearly separable example
    eps = C.epsilons(r, u)
    assert eps.shape == (6,) and eps[0] == 50.0 and np.all(eps[1:] < 50)
    single = C.epsilons(r, u, rules=("single",))
    assert np.all(single <= eps + 1e-12)  # more rules can only find a larger ε
    hist = C.eps_histogram(eps, 16)
    assert sum(hist.values()) == 6 and hist[">=3"] >= 1
    with pytest.raises(ConfigError, match="rules"):
        C.epsilons(r, u, rules=("triple",))
    with pytest.raises(ConfigError, match="equal shapes"):
        C.epsilons(r, u[:, :3])


def test_interval_rule_catches_a_wider_spread():
    # same median, unlearned spread much wider: no single threshold separates, an interval does
    r = np.linspace(-0.2, 0.2, 32)
    u = np.r_[np.linspace(-6, -3, 16), np.linspace(3, 6, 16)]
    assert C.epsilon_per_example(r, u, rules=("single",)) < C.epsilon_per_example(r, u, rules=("double",))


def test_no_surviving_threshold_warns_and_caps():
    # a one-point grid (t = 0) where TPR = FPR = 1: FPR·FNR = 0, the threshold is discarded, nothing survives
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        eps = C.epsilon_per_example([0, 0, 0, 1], [0, 1, 1, 1], rules=("single",), thresholds_per_unit=1)
    assert eps == 50.0
    assert any("no threshold survived" in str(x.message) for x in w)


def test_bootstrap_interval_brackets_f():
    eps = np.r_[np.zeros(50), np.full(50, 1.2)]
    lo, hi = C.bootstrap_forget_quality(eps, 16, replicates=500)
    f = C.forget_quality(eps, 16)
    assert lo <= f <= hi and hi - lo > 0
