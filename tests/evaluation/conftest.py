"""Shared fixtures: the synthetic dataset, its splits and three small models trained once per session."""

from __future__ import annotations

import pytest
import torch

from unlearnkit.data import split_for
from unlearnkit.testing import tiny_bundle, tiny_model
from unlearnkit.training import Recipe, train


@pytest.fixture(scope="session")
def bundle():
    return tiny_bundle()


@pytest.fixture(scope="session")
def class_split(bundle):
    return split_for(bundle, "class:1", 0)


@pytest.fixture(scope="session")
def random_split(bundle):
    return split_for(bundle, "random:0.25", 0)


def _fit(bundle, indices, seed):
    m = tiny_model(seed=seed)
    train(m, bundle.train.subset(indices), Recipe(epochs=8, batch_size=32, lr=0.05), seed=seed, progress=False)
    return m.eval()


@pytest.fixture(scope="session")
def original(bundle):
    return _fit(bundle, torch.arange(len(bundle.train)).numpy(), 0)


@pytest.fixture(scope="session")
def retrained(bundle, class_split):
    return _fit(bundle, class_split.retain, 1)


@pytest.fixture(scope="session")
def retrained_b(bundle, class_split):
    return _fit(bundle, class_split.retain, 2)
