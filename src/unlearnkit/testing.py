"""Helpers shipped for tests and plugin authors: tiny data and a tiny model that learn in a second."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .data.datasets import load_dataset
from .data.splits import Split, split_for


def tiny_bundle(**kw: Any):
    """The `synthetic` dataset (4 classes, 3×8×8, 128 train / 64 test)."""
    return load_dataset("synthetic", **kw)


def tiny_split(spec: str = "class:1", seed: int = 0, **kw: Any) -> Split:
    return split_for(tiny_bundle(**kw), spec, seed)


def tiny_data(spec: str = "class:1", seed: int = 0, **kw: Any):
    """`UnlearnData` over the synthetic dataset for ``spec`` (forget / retain / test and the split)."""
    from .methods.base import UnlearnData

    b = tiny_bundle(**kw)
    s = split_for(b, spec, seed)
    return UnlearnData(forget=b.train.subset(s.forget), retain=b.train.subset(s.retain), test=b.test, split=s,
                       augment=b.info.augment, num_classes=b.info.num_classes)


def tiny_model(seed: int = 0, num_classes: int = 4, trained: bool = False, model: str = "small_cnn") -> nn.Module:
    """A SmallCNN (width 8) for 3×8×8 inputs; ``trained=True`` fits it on the full synthetic training set."""
    from .models import create_model
    from .training import Recipe, train

    torch.manual_seed(seed)
    kw = {"width": 8, "hidden": 32} if model == "small_cnn" else {}
    m = create_model(model, num_classes, 3, 8, **kw)
    if trained:
        train(m, tiny_bundle(num_classes=num_classes).train, Recipe(epochs=15, batch_size=32, lr=0.05),
              seed=seed, progress=False)
    return m
