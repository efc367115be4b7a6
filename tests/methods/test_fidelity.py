"""The fidelity defaults and options of issue 20 item 2 (shared/reviews/methods_fidelity.md), pinned on tiny data.

Each test pins one mechanic: clean statistics for FF / IU (augmentation only on request), the guarded IU
recursion and its retain-accuracy guard, SSD's class-sorted importance batches, SCRUB's batch sizes and
per-scenario rewind, weight decay that follows the original's recipe, the combined RL / SalUn loader and
ℓ1-sparse's prune-then-rewind.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

import pytest
import torch
from torch import nn

from unlearnkit.data.datasets import Augment, ImageDataset
from unlearnkit.errors import ConfigError, DivergenceError
from unlearnkit.methods import RunContext, UnlearnData, create_method, frozen_copy, get_method_class
from unlearnkit.methods._common import magnitude_prune_masks
from unlearnkit.methods._saliency import fisher_diagonal, fisher_diagonal_batches
from unlearnkit.methods.base import DEFAULT_WEIGHT_DECAY, GradientConfig, resolve_weight_decay
from unlearnkit.methods.influence import RecursionStats, reference_ihvp
from unlearnkit.methods.ssd import class_sorted_batches
from unlearnkit.pipeline import recipe_weight_decay
from unlearnkit.testing import tiny_data, tiny_model
from unlearnkit.training import default_recipe

AUG = Augment(crop_padding=2, hflip=True)


@pytest.fixture(scope="module")
def trained() -> nn.Module:
    return tiny_model(trained=True)


def make(name: str, **cfg: Any) -> Any:
    """`create_method`, typed loosely: the tests reach method-specific helpers (``importances``, ``rewinds``)."""
    return create_method(name, **cfg)


def sets(data: UnlearnData) -> tuple[ImageDataset, ImageDataset]:
    """(forget, retain) of tiny data, as the in-memory datasets they are."""
    assert isinstance(data.forget, ImageDataset) and isinstance(data.retain, ImageDataset)
    return data.forget, data.retain


def augmented(data: UnlearnData) -> UnlearnData:
    return dataclasses.replace(data, augment=AUG)


def ctx(model: nn.Module | None = None, seed: int = 0) -> RunContext:
    return RunContext("cpu", seed, original=frozen_copy(model) if model is not None else None)


def equal_dicts(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ clean statistics (FF, IU, SSD)
@pytest.mark.parametrize("fisher_batch_size", [1, 32])
def test_ff_fisher_uses_clean_images_by_default(trained: nn.Module, fisher_batch_size: int) -> None:
    data = tiny_data()
    m = make("ff", max_samples=48, fisher_batch_size=fisher_batch_size)
    assert m.config.augment_for_statistics is False
    on_augmented = m.fisher_diagonal(copy.deepcopy(trained), augmented(data), ctx())
    on_clean = m.fisher_diagonal(copy.deepcopy(trained), dataclasses.replace(data, augment=None), ctx())
    assert equal_dicts(on_augmented, on_clean)
    # the reference behaviour stays reachable: augmented statistics differ
    ref = make("ff", max_samples=48, fisher_batch_size=fisher_batch_size, augment_for_statistics=True)
    assert not equal_dicts(ref.fisher_diagonal(copy.deepcopy(trained), augmented(data), ctx()), on_clean)


def test_iu_statistics_use_clean_images_by_default(trained: nn.Module) -> None:
    data = tiny_data()
    m = make("iu", num_samples=8)
    assert m.config.augment_for_statistics is False
    v_aug = m.gradient_mismatch(copy.deepcopy(trained), augmented(data), ctx())
    v_clean = m.gradient_mismatch(copy.deepcopy(trained), dataclasses.replace(data, augment=None), ctx())
    assert torch.equal(v_aug, v_clean)
    g_aug = torch.stack(list(m.retain_gradients(copy.deepcopy(trained), augmented(data), ctx(), 8)))
    g_clean = torch.stack(list(m.retain_gradients(copy.deepcopy(trained), data, ctx(), 8)))
    assert torch.equal(g_aug, g_clean)
    ref = make("iu", num_samples=8, augment_for_statistics=True)
    assert not torch.equal(ref.gradient_mismatch(copy.deepcopy(trained), augmented(data), ctx()), v_clean)


def test_ssd_importances_use_clean_images_by_default(trained: nn.Module) -> None:
    data = tiny_data()
    m = make("ssd", batch_size=16)
    a = m.importances(copy.deepcopy(trained), augmented(data), ctx())
    b = m.importances(copy.deepcopy(trained), dataclasses.replace(data, augment=None), ctx())
    assert all(equal_dicts(x, y) for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------ IU: guarded recursion
def crafted_gradients(n: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """v and three per-sample gradients; the second one makes the reference denominator n + o·g exactly 0."""
    v = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    g0 = torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    g1 = torch.tensor([-n / 2.0, 1.0, 0.0], dtype=torch.float64)  # o·g1 = −n  ⇒  n + o·g1 = 0
    g2 = torch.tensor([0.5, 0.0, 1.0], dtype=torch.float64)
    return v, [g0, g1, g2]


def test_iu_guard_skips_a_singular_denominator_and_counts_it() -> None:
    n = 10
    v, grads = crafted_gradients(n)
    unguarded = reference_ihvp(v, grads, n)  # the reference divides by zero
    assert not torch.isfinite(unguarded).all()
    stats = RecursionStats()
    guarded = reference_ihvp(v, grads, n, floor=0.1, stats=stats)
    assert torch.isfinite(guarded).all()
    assert stats.skipped == 1 and stats.used == 2 and stats.min_denominator == 0.0
    # skipping = the recursion without that sample
    assert torch.allclose(guarded, reference_ihvp(v, [grads[0], grads[2]], n))


def test_iu_guard_skips_negative_and_small_denominators_only() -> None:
    n = 10
    v = torch.tensor([1.0, -1.0], dtype=torch.float64)
    o = torch.tensor([1.0, 0.0], dtype=torch.float64)
    negative = torch.tensor([-15.0, 1.0], dtype=torch.float64)  # n + o·g = −5
    small = torch.tensor([-9.5, 1.0], dtype=torch.float64)  # 0.5 < 0.1 · n
    fine = torch.tensor([-5.0, 1.0], dtype=torch.float64)  # 5 ≥ 0.1 · n
    stats = RecursionStats()
    reference_ihvp(v, [o, negative, small, fine], n, floor=0.1, stats=stats)
    assert (stats.used, stats.skipped, stats.min_denominator) == (2, 2, -5.0)
    # a stable set of gradients is untouched by the guard
    stable = [o, torch.tensor([0.3, 0.2], dtype=torch.float64), torch.tensor([-0.1, 0.4], dtype=torch.float64)]
    assert torch.equal(reference_ihvp(v, stable, n, floor=0.1), reference_ihvp(v, stable, n))


def test_iu_logs_the_recursion_and_accepts_the_unguarded_reference(trained: nn.Module) -> None:
    data = tiny_data()
    c = ctx()
    make("iu", num_samples=16, alpha=1e-3).unlearn(copy.deepcopy(trained), data, c)
    logged = {k: v for row in c.history for k, v in row.items()}
    assert logged["ihvp_skipped"] == 0 and logged["ihvp_used"] == 18
    assert make("iu", denominator_floor=None).config.denominator_floor is None
    with pytest.raises(ConfigError, match="denominator_floor"):
        make("iu", denominator_floor=1.5)


def test_iu_retain_guard_raises_or_rolls_back(trained: nn.Module) -> None:
    data = tiny_data()
    with pytest.raises(DivergenceError, match="iu"):
        make("iu", num_samples=16, alpha=1e4).unlearn(copy.deepcopy(trained), data, ctx())
    model = copy.deepcopy(trained)
    with pytest.warns(RuntimeWarning, match="Rolled back"):
        out = make("iu", num_samples=16, alpha=1e4, on_divergence="rollback").unlearn(model, data, ctx())
    assert all(torch.equal(a, b) for a, b in zip(out.state_dict().values(), trained.state_dict().values(), strict=True))


def test_iu_retain_drop_threshold_is_configurable(trained: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crafted 8-point drop: refused under the default 5-point limit, accepted under a 10-point one."""
    import unlearnkit.methods.influence as iu

    seen = iter([90.0, 82.0, 90.0, 82.0])
    monkeypatch.setattr(iu, "retain_accuracy_sample", lambda *a, **k: next(seen))
    data = tiny_data()
    with pytest.raises(DivergenceError, match=r"90\.0% to 82\.0%"):
        make("iu", num_samples=8, alpha=1e-3).unlearn(copy.deepcopy(trained), data, ctx())
    make("iu", num_samples=8, alpha=1e-3, max_retain_drop=10).unlearn(copy.deepcopy(trained), data, ctx())


# -------------------------------------------------------------------------------- SSD: class-sorted batches
def test_ssd_class_sorted_batches_hold_one_class_each() -> None:
    _, retain = sets(tiny_data("random:0.5"))
    batches = list(class_sorted_batches(retain, 8, "cpu"))
    labels = [y for _, y in batches]
    assert all(len(torch.unique(y)) == 1 for y in labels)
    order = [int(y[0]) for y in labels]
    assert order == sorted(order)  # ascending classes, each class contiguous
    assert sorted(torch.cat(labels).tolist()) == sorted(retain.targets.tolist())
    assert sum(len(y) for y in labels) == len(retain)


def test_ssd_batch_order_follows_the_scenario(trained: nn.Module) -> None:
    ssd = make("ssd", batch_size=16)
    assert ssd.config.batch_order == "auto"
    assert ssd.batch_order(tiny_data("class:1")) == "class_sorted"
    assert ssd.batch_order(tiny_data("random:0.2")) == "shuffled"
    # class-wise default: I_D equals the importance over single-class batches of retain ∪ forget
    data = tiny_data("class:1")
    _, i_d = ssd.importances(copy.deepcopy(trained), data, ctx())
    f, r = sets(data)
    full = ImageDataset(torch.cat([r.images, f.images]), torch.cat([r.targets, f.targets]))
    expect = fisher_diagonal_batches(copy.deepcopy(trained), class_sorted_batches(full, 16, "cpu"))
    assert equal_dicts(i_d, expect)
    # the shuffled option gives different (mixed-batch) importances
    shuffled = make("ssd", batch_size=16, batch_order="shuffled")
    _, i_d_mixed = shuffled.importances(copy.deepcopy(trained), data, ctx())
    g = torch.Generator().manual_seed(0)  # the run's rng: the forget pass draws first, then the reference pass
    fisher_diagonal(copy.deepcopy(trained), data.forget, batch_size=16, device="cpu", generator=g, shuffle=True)
    expect_mixed = fisher_diagonal(copy.deepcopy(trained), full, batch_size=16, device="cpu", generator=g, shuffle=True)
    assert equal_dicts(i_d_mixed, expect_mixed)
    assert not equal_dicts(i_d, i_d_mixed)


# -------------------------------------------------------------------------------------- SCRUB: batches, rewind
def test_scrub_defaults_are_the_official_run_batch_sizes() -> None:
    c = make("scrub").config
    assert (c.forget_batch_size, c.batch_size) == (512, 256)
    assert make("scrub", preset="default").config.forget_batch_size == 512


def test_scrub_rewind_follows_the_scenario(trained: nn.Module) -> None:
    scrub = make("scrub")
    assert scrub.config.rewind is None
    random_split = tiny_data("random:0.2")
    assert scrub.rewinds(random_split) is True
    assert scrub.rewinds(tiny_data("class:1")) is False
    assert scrub.rewinds(dataclasses.replace(random_split, test=None)) is False  # no held-out data: plain SCRUB
    assert make("scrub", rewind=False).rewinds(random_split) is False
    assert make("scrub", rewind=True).rewinds(tiny_data("class:1")) is True
    c = ctx(trained)
    small = {"epochs": 2, "msteps": 1, "forget_batch_size": 16, "batch_size": 32}
    make("scrub", **small).unlearn(copy.deepcopy(trained), random_split, c)
    assert any("rewind_epoch" in row for row in c.history)


# --------------------------------------------------------------------------- weight decay follows the original
def test_weight_decay_resolution() -> None:
    assert GradientConfig().weight_decay is None
    assert resolve_weight_decay(None, 0.0) == 0.0
    assert resolve_weight_decay(None, None) == DEFAULT_WEIGHT_DECAY == 5e-4
    assert resolve_weight_decay(1e-3, 0.0) == 1e-3
    with pytest.raises(ConfigError, match="weight_decay"):
        make("ft", weight_decay=-1.0)
    # the pipeline's reading of an original's recipe: coupled (L2) decay only
    fmnist = default_recipe("fashion_mnist", "small_cnn").to_dict()
    assert recipe_weight_decay(fmnist) == 0.0
    assert recipe_weight_decay(default_recipe("digits", "small_cnn").to_dict()) == 5e-4
    assert recipe_weight_decay(default_recipe("fashion_mnist", "vit_tiny").to_dict()) is None  # AdamW
    assert recipe_weight_decay(None) is None


def test_weight_decay_none_uses_the_originals_value(trained: nn.Module) -> None:
    data = tiny_data()

    def ft(d: UnlearnData, **cfg: object) -> list[torch.Tensor]:
        # the class itself: create_method without a dataset applies the [default] preset, which sets 5e-4
        m = get_method_class("ft")(epochs=1, batch_size=32, lr=0.05, **cfg)
        return list(m.unlearn(copy.deepcopy(trained), d, ctx()).state_dict().values())

    no_decay = dataclasses.replace(data, original_weight_decay=0.0)
    assert all(torch.equal(a, b) for a, b in zip(ft(no_decay), ft(data, weight_decay=0.0), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ft(data), ft(data, weight_decay=5e-4), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ft(no_decay), ft(data), strict=True))
    # an explicit value wins over the original's
    assert all(torch.equal(a, b) for a, b in zip(ft(no_decay, weight_decay=5e-4), ft(data), strict=True))


def test_presets_that_set_weight_decay_keep_it() -> None:
    assert make("ft", preset="default").config.weight_decay == 5e-4
    assert make("ft", dataset="fashion_mnist", model="small_cnn", kind="class").config.weight_decay == 5e-3
    assert make("ft", dataset="fashion_mnist", model="small_cnn", kind="random").config.weight_decay is None


# ------------------------------------------------------------------------------- RL / SalUn combined variant
@pytest.mark.parametrize("name", ["rl", "salun"])
def test_combined_variant_loader_is_forget_with_random_labels_and_retain(trained: nn.Module, name: str) -> None:
    data = tiny_data("class:1")
    m = make(name, variant="combined", epochs=2, batch_size=16)
    c = ctx()
    model = copy.deepcopy(trained)
    m.setup(model, data, c)
    union = m.union_
    forget, retain = sets(data)
    n_f, n_r = len(forget), len(retain)
    assert len(union) == n_f + n_r
    assert torch.equal(union.images[:n_f], forget.images)
    assert torch.equal(union.images[n_f:], retain.images)
    assert torch.equal(union.targets[n_f:], retain.targets)
    first = union.targets[:n_f].clone()
    assert int(first.min()) >= 0 and int(first.max()) < 4
    assert not torch.equal(first, forget.targets)
    phases = list(m.schedule())
    assert [(p.name, p.epochs) for p in phases] == [("combined_union", 2)]
    assert phases[0].source is union
    # one pass of the loop's batches sees exactly these labels (forget ∪ retain, shuffled)
    seen = torch.cat([b.mixed[1] for b in m.batches(phases[0], data, c)])
    assert sorted(seen.tolist()) == sorted(union.targets.tolist())
    # fresh uniform labels every epoch, the retain labels untouched
    m.on_epoch_end(model, phases[0], c)
    assert not torch.equal(union.targets[:n_f], first)
    assert torch.equal(union.targets[n_f:], retain.targets)
    m.teardown(c)
    assert make(name).config.variant == "sequential"
    out = make(name, variant="combined", epochs=1, batch_size=16).unlearn(copy.deepcopy(trained), data, ctx())
    assert not all(
        torch.equal(a, b) for a, b in zip(out.state_dict().values(), trained.state_dict().values(), strict=True)
    )


# ----------------------------------------------------------------------------------- ℓ1-sparse prune, rewind
def test_l1_prune_then_rewind_starts_from_original_times_mask_and_keeps_it(trained: nn.Module) -> None:
    data = tiny_data()
    rate = 0.5
    masks = magnitude_prune_masks(trained, rate)
    assert masks
    m = make("l1_sparse", prune_rate=rate, epochs=2, batch_size=32, lr=0.05)
    model = copy.deepcopy(trained)
    c = ctx()
    m.setup(model, data, c)
    original = dict(trained.named_parameters())
    for name, p in model.named_parameters():
        expect = original[name].detach() * masks[name] if name in masks else original[name].detach()
        assert torch.equal(p.detach(), expect), name
    m.teardown(c)
    out = make("l1_sparse", prune_rate=rate, epochs=2, batch_size=32, lr=0.05).unlearn(
        copy.deepcopy(trained), data, ctx()
    )
    params = dict(out.named_parameters())
    total = sum(w.numel() for w in masks.values())
    zeros = sum(int((params[n].detach()[masks[n] == 0] == 0).sum()) for n in masks)
    assert zeros == round(rate * total)  # every pruned weight is still exactly 0
    moved = [n for n in masks if not torch.equal(params[n].detach(), original[n].detach() * masks[n])]
    assert moved  # the surviving weights were trained
    assert not math.isnan(float(sum(p.detach().sum() for p in out.parameters())))
