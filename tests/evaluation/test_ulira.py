"""U-LiRA-lite (evaluation.md §3.3): the null check, a leaking unlearner, and the shadow builder."""

from __future__ import annotations

import numpy as np
import pytest

from unlearnkit.errors import ConfigError
from unlearnkit.evaluation.ulira import build_ulira_shadows, ulira_from_statistics, ulira_lite


def _stats(shift: float, n_sh: int = 16, n_pool: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_sh, n_pool)) < 0.5
    base = rng.normal(0, 2, n_pool)  # per-example difficulty
    phi = base + rng.normal(0, 1, (n_sh, n_pool)) + shift * mask
    return phi, mask


def test_same_law_gives_chance():
    # Unlearn := Retrain — "in" and "out" statistics have the same law
    r = ulira_from_statistics(*_stats(0.0))
    assert abs(r["ulira_auc"] - 0.5) < 0.05
    assert r["n_shadow"] == 16 and r["n_pool"] == 200 and r["variance"] == "global"


def test_leaking_unlearner_is_detected():
    r = ulira_from_statistics(*_stats(2.0))
    assert r["ulira_auc"] > 0.8 and r["ulira_balanced_accuracy"] > 70
    assert r["ulira_tpr_at_fpr_0.01"] > 0.01
    assert 0 <= r["per_example_auc_quantiles"]["0.1"] <= r["per_example_auc_quantiles"]["0.9"] <= 1
    per_ex = ulira_from_statistics(*_stats(2.0), fix_variance=False)
    assert per_ex["variance"] == "per_example" and per_ex["ulira_auc"] > 0.7


def test_bad_inputs():
    phi, mask = _stats(0.0, n_sh=3)
    with pytest.raises(ConfigError, match="at least 4 shadow"):
        ulira_from_statistics(phi, mask)
    phi, mask = _stats(0.0)
    with pytest.raises(ConfigError, match="N_shadow, n_pool"):
        ulira_from_statistics(phi, mask[:, :10])
    phi[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        ulira_from_statistics(phi, mask)


def test_build_shadows_and_run(bundle):
    # cheap shadows: "training" returns a fixed model, "unlearning" is the identity -> φ identical in/out
    from unlearnkit.testing import tiny_model

    fixed = tiny_model(seed=0)
    calls = []

    def train_fn(ds, seed):
        calls.append(len(ds))
        return fixed

    shadows = build_ulira_shadows(
        bundle.train, np.arange(20), 4, train_fn=train_fn, unlearn_fn=lambda m, f, r, s: m, seed=0
    )
    assert shadows.in_mask.shape == (4, 20) and len(shadows.models) == 4
    assert calls == [108 + int(k) for k in shadows.in_mask.sum(1)]  # B (128 − 20) plus the "in" pool examples
    r = ulira_lite(shadows, bundle.train)
    assert r["ulira_auc"] == pytest.approx(0.5)  # identical statistics: every score ties
