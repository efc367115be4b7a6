"""Gradient Ascent (GA, NegGrad): maximise the loss on the forget set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from . import register
from .base import Batch, GradientConfig, GradientMethod, Phase, Requirements, RunContext


@dataclass(frozen=True, kw_only=True)
class GradientAscentConfig(GradientConfig):
    """GA settings; defaults are the OPTML code's (5 epochs, lr 1e-4, batch 256, BatchNorm in train mode).

    Args:
        freeze_bn: run the network in ``eval()`` mode during the updates (BatchNorm statistics frozen), as the
            SFR-on code does; False is the OPTML behaviour.
        max_grad_norm: clip the gradient norm to this value before each step (SFR-on uses 0.1); None: no clipping.
    """

    epochs: int = 5
    lr: float = 1e-4
    batch_size: int = 256
    freeze_bn: bool = False
    max_grad_norm: float | None = None

    def validate(self) -> None:
        super().validate()
        self.check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}",
        )


@register("ga", aliases=("gradient_ascent", "neggrad"))
class GradientAscent(GradientMethod):
    """Gradient ascent on the forget set: undo its training signal by maximising its loss.

    Paper: Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022;
    the GA baseline of Jia et al., NeurIPS 2023 (methods.md §2.1).

    Minimises ``−L_{B_f}(θ)`` (the negated mean cross-entropy of forget batches), i.e. ``θ ← θ + η∇L``. Weight
    decay in the optimizer still acts as ordinary decay. The objective is unbounded, so the divergence guard is
    on: a non-finite loss, non-finite weights or a collapse of accuracy (measured on the test set, since GA
    never reads the retain set) raises `DivergenceError` or, with ``on_divergence="rollback"``, restores the
    input weights.

    Args:
        epochs: passes over the forget set (E, default 5).
        lr: learning rate η (default 1e-4; raise to 5e-4–1e-3 if nothing is forgotten).
        batch_size: forget batch size (default 256).
        freeze_bn: BatchNorm in eval mode during updates (SFR-on), default False (OPTML).
        max_grad_norm: gradient-norm clip (SFR-on: 0.1), default None.

    Requires: the forget set with labels; never the retain set.
    """

    Config = GradientAscentConfig
    requires = Requirements(retain=False)
    summary = "gradient ascent on the forget set (NegGrad)"
    paper = "Thudi et al., Unrolling SGD, EuroS&P 2022"
    guard_divergence = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 16}

    @property
    def train_mode(self) -> bool:  # type: ignore[override]
        return not self.config.freeze_bn

    def schedule(self) -> Iterable[Phase]:
        yield Phase("ascent", "forget", self.config.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> torch.Tensor:
        x, y = batch.forget  # type: ignore[misc]
        return -F.cross_entropy(model(x), y)

    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        if self.config.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
