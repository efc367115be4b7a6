"""ℓ1-sparse unlearning: fine-tune on the retain set with a linearly decaying ℓ1 penalty (optionally OMP first)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn
from torch.nn import functional as F

from . import register
from ._common import apply_masks_, magnitude_prune_masks
from .base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData


@dataclass(frozen=True, kw_only=True)
class L1SparseConfig(GradientConfig):
    """ℓ1-sparse settings (methods.md §6): FT's recipe (10 epochs, SGD 0.01 / 0.9 / 5e-4, batch 256) plus ℓ1.

    Args:
        gamma: initial ℓ1 strength γ (the reference's ``alpha``; library default 1e-4, grid {5e-5 … 5e-4}).
        no_l1_epochs: m, the number of final epochs without the penalty.
        prune_rate: when set, "prune first, then unlearn" (methods.md §6.2 at unlearning time): the OMP mask is
            taken from the original's Conv2d weight magnitudes (global, this fraction removed, e.g. 0.95), the
            surviving weights are rewound to the original's values (the reference rewinds to an early training
            checkpoint, which an unlearning request does not have) and the pruned ones set to 0, then unlearning
            runs with the mask enforced (gradients masked, pruned weights kept at exactly 0 after every step).
            The reference's retraining of the masked model on the full data before the request is not run.
            None: dense.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 256
    gamma: float = 1e-4
    no_l1_epochs: int = 0
    prune_rate: float | None = None

    def validate(self) -> None:
        super().validate()
        self.check(self.gamma >= 0, f"gamma must be ≥ 0, got {self.gamma}")
        self.check(
            0 <= self.no_l1_epochs <= self.epochs,
            f"no_l1_epochs must be in [0, epochs={self.epochs}], got {self.no_l1_epochs}",
        )
        self.check(
            self.prune_rate is None or 0.0 <= self.prune_rate < 1.0,
            f"prune_rate must be in [0, 1) or None, got {self.prune_rate}",
        )


@dataclass(frozen=True)
class L1Phase(Phase):
    """One epoch over the retain set with its ℓ1 strength γ_t."""

    gamma: float = 0.0


def l1_schedule(gamma: float, epochs: int, no_l1_epochs: int = 0) -> list[float]:
    """γ_t = γ · (1 − t / (T − m)) for t < T − m, else 0 (constant within an epoch)."""
    active = epochs - no_l1_epochs
    return [gamma * (1 - t / active) if t < active else 0.0 for t in range(epochs)]


@register("l1_sparse", aliases=("l1", "sparse"))
class L1Sparse(GradientMethod):
    """ℓ1-sparse unlearning: a sparsity prior makes approximate unlearning land closer to retraining.

    Paper: Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (methods.md §6).

    In epoch ``t = 0..T−1`` minimises ``L_{B_r}(θ) + γ_t ‖θ‖₁`` on retain batches, where ``‖θ‖₁`` covers all
    parameters (conv, linear, BatchNorm, biases) and ``γ_t = γ(1 − t/(T − m))`` decays linearly to 0 (0 in the
    last m epochs). With ``prune_rate`` the model is first magnitude-pruned ("prune first, then unlearn") and
    the mask stays enforced.

    Args:
        gamma: γ, initial ℓ1 strength (default 1e-4).
        no_l1_epochs: m (default 0).
        prune_rate: OMP sparsity r (default None: no pruning; the paper uses 0.95).
        epochs, lr, batch_size: 10, 0.01, 256.

    Requires: the retain set.
    """

    Config = L1SparseConfig
    summary = "fine-tune with a linearly decaying l1 penalty (optionally after one-shot magnitude pruning)"
    paper = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"
    train_mode = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 2, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        rate = self.config.prune_rate
        self.masks_ = magnitude_prune_masks(model, rate) if rate else {}
        apply_masks_(model, self.masks_)

    def schedule(self) -> Iterable[Phase]:
        c = self.config
        for t, gamma in enumerate(l1_schedule(c.gamma, c.epochs, c.no_l1_epochs)):
            yield L1Phase(f"epoch_{t}", "retain", 1, gamma=gamma)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        x, y = batch.retain  # type: ignore[misc]
        ce = F.cross_entropy(model(x), y)
        gamma = getattr(phase, "gamma", 0.0)
        if gamma == 0:
            return StepOutput(ce, {"gamma": 0.0})
        l1 = cast(torch.Tensor, sum(p.abs().sum() for p in model.parameters() if p.requires_grad))
        return StepOutput(ce + gamma * l1, {"gamma": gamma, "l1": l1.detach()})

    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        params = dict(model.named_parameters())
        for name, m in self.masks_.items():
            grad = params[name].grad
            if grad is not None:
                grad.mul_(m)

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
        apply_masks_(model, self.masks_)  # weight decay and momentum must not revive pruned weights
