"""Class-wise forgetting on real data (scikit-learn digits, class 3) with the `[digits.small_cnn.class]` presets.

Each method meant to forget a class must reach accuracy_forget ≤ 5 % and keep accuracy_retain within 5 points of
the original. Three batch-A methods are excluded from that bar, with the reason and a weaker, honest check:

* ``ga``: its objective is unbounded; on digits the lr range between "nothing forgotten" and "test accuracy at
  chance" is under a factor of 2 and moves with the seed (lr 5e-3 ×3 epochs: forgets at one seed, collapses at
  two others; 4e-3: forget accuracy 81 %). We check methods.md §2.1's sanity check instead.
* ``neggrad_plus``: forgetting is a runaway of the forget ascent; every setting we measured either leaves the
  class (β 0.95, 6–8 epochs: forget accuracy 35–93 %, moving with tiny numerical changes of the original) or
  forgets it at a cost of 7–25 retain points (β 0.93, 10 epochs cosine: forget 0 %, retain 92–93 % on 3 seeds;
  β 0.9: retain 76 %). We check "forgets, retain within 15 points" with the preset and the retain watch
  (``max_retain_drop``) widened to those 15 points; at its default 5 points the watch stops the run early, with
  a warning, before the class is gone (forget accuracy ~37 %).
* ``iu``: one Newton step; with the old augmented gradient statistics α = 0.15 left 6.6 % forget accuracy and
  α = 0.3 dropped retain accuracy to 34–74 % depending on the seed. We check the soft §5 check instead.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from unlearnkit.data import split_for
from unlearnkit.errors import DivergenceError
from unlearnkit.methods import RunContext, UnlearnData, create_method, frozen_copy
from unlearnkit.methods.context import retain_accuracy_sample
from unlearnkit.methods.loop import kept_classes
from unlearnkit.training import accuracy

CLASS_FORGETTERS = ["retrain", "ft", "rl", "ff", "l1_sparse"]


@pytest.fixture(scope="module")
def setup(digits_original):
    """The run's shared digits original (conftest) and the class-3 split."""
    bundle = digits_original.bundle
    split = split_for(bundle, "class:3", 0)
    data = UnlearnData(
        forget=bundle.train.subset(split.forget),
        retain=bundle.train.subset(split.retain),
        test=bundle.test,
        split=split,
        augment=bundle.info.augment,
        num_classes=10,
    )
    return digits_original.model, data


def _unlearn(name: str, original, data, **overrides):
    method = create_method(name, dataset="digits", model="small_cnn", kind="class", **overrides)
    return method.unlearn(copy.deepcopy(original), data, RunContext("cpu", 0, original=frozen_copy(original)))


def test_original_knows_the_class(setup) -> None:
    original, data = setup
    assert accuracy(original, data.forget) >= 95 and accuracy(original, data.retain) >= 95


@pytest.mark.parametrize("name", CLASS_FORGETTERS)
def test_forgets_class_3(name: str, setup) -> None:
    original, data = setup
    out = _unlearn(name, original, data)
    forget, retain = accuracy(out, data.forget), accuracy(out, data.retain)
    assert forget <= 5, f"{name}: accuracy_forget {forget:.1f}%"
    assert abs(retain - accuracy(original, data.retain)) <= 5, f"{name}: accuracy_retain {retain:.1f}%"


def test_neggrad_plus_forgets_at_a_retain_cost(setup) -> None:
    original, data = setup
    out = _unlearn("neggrad_plus", original, data, max_retain_drop=15)
    assert accuracy(out, data.forget) <= 5
    assert accuracy(out, data.retain) >= accuracy(original, data.retain) - 15
    with pytest.warns(RuntimeWarning, match="Stopped early"):  # the default watch stops it within 5 points
        guarded = _unlearn("neggrad_plus", original, data)
    assert accuracy(guarded, data.retain) >= accuracy(original, data.retain) - 5


def test_ga_aggressive_setting_forgets_and_hurts_retain(setup) -> None:
    """methods.md §2.1: with enough steps forget accuracy → ≈ 0 and RA drops clearly (here: to chance)."""
    original, data = setup
    aggressive = {"lr": 1e-2, "batch_size": 32, "epochs": 3}
    out = _unlearn("ga", original, data, **aggressive, collapse_floor=0.0, max_retain_drop=100)
    assert accuracy(out, data.forget) <= 5
    assert accuracy(out, data.retain) < accuracy(original, data.retain) - 30
    # The default guards refuse to return that model: the retain watch (5 points) stops the run early and restores
    # the last check within the limit (at step 9 here, before the collapse guard's 20 % floor is reached).
    with pytest.warns(RuntimeWarning, match="Stopped early"):
        guarded = _unlearn("ga", original, data, **aggressive)
    # GA needs no retain set, so its watch measures a fixed sample of the held-out images of the kept classes:
    # the restored state is within 5 points there (the full retain set may differ by a point or two)
    probe, ctx = kept_classes(data.test, data.forget_classes), RunContext("cpu", 0)
    assert retain_accuracy_sample(guarded, probe, ctx) >= retain_accuracy_sample(original, probe, ctx) - 5
    with pytest.raises(DivergenceError):  # with the watch off, the collapse guard still refuses the collapse
        _unlearn("ga", original, data, **aggressive, max_retain_drop=100)


def test_iu_small_step_raises_forget_loss_and_keeps_retain(setup) -> None:
    """methods.md §5 soft check: a small α increases the forget loss while RA barely changes."""
    original, data = setup
    # With clean (non-augmented) statistics, the default, the digits original's forget gradients are tiny (its
    # training loss is ~3e-4), so the step needs the preset's α 10 to show: forget loss ×3.1, RA unchanged.
    out = _unlearn("iu", original, data, alpha=10.0)

    def loss(model, ds) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(ds.images.float() / 255), ds.targets))

    assert loss(out, data.forget) > 2 * loss(original, data.forget)
    assert accuracy(out, data.retain) >= accuracy(original, data.retain) - 2


@pytest.mark.slow
def test_tune_ranks_a_two_point_grid_on_digits() -> None:
    """tune() trains (or loads) original + oracle on a validation split and ranks configs by Avg. Gap."""
    from unlearnkit.tune import tune

    result = tune(
        "ft",
        "digits",
        "small_cnn",
        "class:3",
        {"lr": [0.0, 0.1]},
        base={"epochs": 10, "batch_size": 64, "weight_decay": 5e-3},
        device="cpu",
        budget=None,  # 10 epochs on digits exceed the class-wise 0.1x-retraining budget; this test is the ranking
        seeds=[0],  # one original, the run's shared digits original (cached): half the trainings of the default two
    )
    ranked = result.ranking
    assert [c["lr"] for c, _ in ranked] == [0.1, 0.0]  # lr 0 keeps the class, far from the oracle
    assert ranked[0][1] < ranked[1][1]


def test_grid_configs_and_bad_grid() -> None:
    from unlearnkit.errors import ConfigError
    from unlearnkit.tune import grid_configs

    assert grid_configs({"a": [1, 2], "b": [3]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 3}]
    with pytest.raises(ConfigError, match="non-empty list"):
        grid_configs({"a": []})
    from unlearnkit.tune import tune

    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        tune("ft", "digits", "small_cnn", "class:3", {"lrr": [0.1]}, device="cpu")
