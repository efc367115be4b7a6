"""Divergence safety: ascent-type methods detect a non-finite loss or a collapse and raise or roll back."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit.errors import DivergenceError
from unlearnkit.methods import RunContext, UnlearnData, create_method, frozen_copy
from unlearnkit.runner import unlearn
from unlearnkit.testing import RaisingDataset, tiny_data, tiny_model


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    return tiny_model(trained=True)


def _ctx(model: torch.nn.Module) -> RunContext:
    return RunContext("cpu", 0, original=frozen_copy(model))


def test_ga_with_a_huge_lr_raises(trained: torch.nn.Module) -> None:
    data = tiny_data()
    with pytest.raises(DivergenceError, match=r"ga.*diverged.*on_divergence=rollback"):
        create_method("ga", lr=1e4, epochs=3, batch_size=16, max_retain_drop=100.0).unlearn(
            copy.deepcopy(trained), data, _ctx(trained)
        )


def test_ga_rollback_restores_the_input_weights(trained: torch.nn.Module) -> None:
    data = tiny_data()
    model = copy.deepcopy(trained)
    with pytest.warns(RuntimeWarning, match="Rolled back"):
        out = create_method(
            "ga", lr=1e4, epochs=3, batch_size=16, on_divergence="rollback", max_retain_drop=100.0
        ).unlearn(model, data, _ctx(trained))
    for a, b in zip(trained.state_dict().values(), out.state_dict().values(), strict=False):
        assert torch.equal(a, b)


def test_collapse_without_nan_is_detected_on_test_set_for_ga(trained: torch.nn.Module) -> None:
    # GA never reads retain: the collapse probe uses the test set, and the retain set may be unreadable.
    d = tiny_data()
    data = UnlearnData(forget=d.forget, retain=RaisingDataset(), test=d.test, split=d.split, num_classes=4)
    method = create_method("ga", lr=0.5, epochs=3, batch_size=16, collapse_floor=90.0, max_retain_drop=100.0)
    with pytest.raises(DivergenceError, match="test accuracy collapsed"):
        method.unlearn(copy.deepcopy(trained), data, _ctx(trained))


def test_huge_lr_through_the_public_api(trained: torch.nn.Module) -> None:
    d = tiny_data()
    with pytest.raises(DivergenceError):
        unlearn(
            trained,
            d.forget,
            d.retain,
            method="ga",
            device="cpu",
            lr=1e4,
            epochs=3,
            batch_size=16,
            max_retain_drop=100.0,
        )
    with pytest.warns(RuntimeWarning):
        out = unlearn(
            trained,
            d.forget,
            d.retain,
            method="neggrad_plus",
            device="cpu",
            lr=1e4,
            epochs=2,
            beta=0.0,
            batch_size=16,
            on_divergence="rollback",
        )
    assert all(
        torch.equal(a, b) for a, b in zip(trained.state_dict().values(), out.state_dict().values(), strict=False)
    )


def test_a_sensible_lr_does_not_trigger_the_guard(trained: torch.nn.Module) -> None:
    out = create_method("ga", lr=1e-3, epochs=1, batch_size=16).unlearn(
        copy.deepcopy(trained), tiny_data(), _ctx(trained)
    )
    assert all(torch.isfinite(p).all() for p in out.parameters())
