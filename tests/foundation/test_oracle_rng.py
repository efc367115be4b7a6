"""`oracle.train_or_load` seeds and trains on a fork of torch's RNG: the caller's generator is left as it was, and
the weights depend on the seed only, not on what the caller drew before."""

from __future__ import annotations

import torch

from unlearnkit.cache import model_sha256
from unlearnkit.oracle import train_or_load
from unlearnkit.testing import tiny_bundle
from unlearnkit.training import Recipe


def _train() -> str:
    t = train_or_load(tiny_bundle(), "small_cnn", None, seed=3, recipe=Recipe(epochs=1), device="cpu", use_cache=False)
    return model_sha256(t.model)


def test_training_leaves_the_global_rng_alone_and_ignores_its_state() -> None:
    torch.manual_seed(11)
    state = torch.get_rng_state().clone()
    first = _train()
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from, or seeded on, the caller's generator
    torch.rand(1000)  # the caller draws: a different global state
    assert _train() == first
