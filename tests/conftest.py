"""Shared fixtures: an isolated model cache, no progress bars, and one trained digits original per test run."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from torch import nn

    from unlearnkit.data.datasets import DatasetBundle
    from unlearnkit.oracle import TrainedModel

os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")
# A Ray started by the tests (tests/bench/test_ray_executor.py, the README's `ray start`) binds to the loopback
# address only (Ray's single-machine mode; read when ray is imported): no test talks to a non-loopback address.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session trains into its own cache, so tests never depend on a user's cache.

    ``UNLEARNKIT_TEST_CACHE`` opts in to a cache kept between runs (e.g. a CI cache directory); a user's
    ``UNLEARNKIT_CACHE`` is never used.
    """
    if "UNLEARNKIT_TEST_CACHE" in os.environ:
        os.environ["UNLEARNKIT_CACHE"] = os.environ["UNLEARNKIT_TEST_CACHE"]
    else:
        os.environ["UNLEARNKIT_CACHE"] = str(tmp_path_factory.mktemp("unlearnkit-cache"))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the trained digits original (a minute of training, then real-data unlearning) is
    ``slow``: ``make check`` skips them, ``make test`` (CI) runs them."""
    for item in items:
        if "digits_original" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@dataclass(frozen=True)
class DigitsOriginal:
    """The scikit-learn digits ``small_cnn`` original (seed 0, default recipe) and its dataset.

    ``model`` is shared by every test of the run: never train it in place, ``copy.deepcopy`` it first.
    """

    bundle: DatasetBundle
    trained: TrainedModel

    @property
    def model(self) -> nn.Module:
        return self.trained.model


@pytest.fixture(scope="session")
def digits_original(_isolated_cache: None) -> DigitsOriginal:
    """The digits original, trained once per test run through the project's own cache (about a minute on 2 cores).

    Every behaviour test that needs it (and ``unlearnkit train --dataset digits --model small_cnn`` through the CLI)
    gets this one model instead of training its own; the cache is the session's temporary one (see
    ``_isolated_cache``), so the first request trains and the rest load it. Tests using it are marked ``slow``
    automatically (``pytest_collection_modifyitems`` above).
    """
    from unlearnkit.data import load_dataset
    from unlearnkit.oracle import train_or_load

    bundle = load_dataset("digits")
    trained = train_or_load(bundle, "small_cnn", None, seed=0, device="cpu", progress=False)
    # A freshly trained model comes back in eval mode, one loaded from the cache in train mode (a new module's
    # default): make it the same either way, as the tests had it when each trained its own.
    trained.model.eval()
    return DigitsOriginal(bundle, trained)
