"""Fine-tune (FT): keep training the original model on the retain set only."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from . import register
from .base import Batch, GradientConfig, GradientMethod, Phase, RunContext


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(GradientConfig):
    """FT settings; defaults are the OPTML code's (10 epochs, SGD lr 0.01, momentum 0.9, wd 5e-4, batch 256)."""

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 256


@register("ft", aliases=("finetune", "fine_tune"))
class FineTune(GradientMethod):
    """Fine-tune on the retain set so that catastrophic forgetting erases what only the forget set taught.

    Paper: Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023; used as the FT baseline of
    Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (methods.md §1.2).

    Optimises ``L_{D_r}(θ)`` (mean cross-entropy on retain batches) with SGD from ``θ_o``, network in
    ``train()`` mode, the forget set unused.

    Args:
        epochs: passes over the retain set (E, default 10).
        lr: learning rate η (default 0.01; the authors search [0.01, 0.1]).
        batch_size: retain batch size (default 256).
        momentum, weight_decay, schedule, optimizer: as in `GradientConfig` (SGD 0.9, constant; weight decay:
            the original's training value when known, else 5e-4).

    Requires: the retain set.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import create_method
        >>> out = create_method("ft", epochs=1).unlearn(tiny_model(), tiny_data())
    """

    Config = FineTuneConfig
    summary = "fine-tune on the retain set (catastrophic forgetting)"
    paper = "Warnecke et al., Machine Unlearning of Features and Labels, NDSS 2023"
    train_mode = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def schedule(self) -> Iterable[Phase]:
        yield Phase("finetune", "retain", self.config.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> torch.Tensor:
        x, y = batch.retain  # type: ignore[misc]
        return F.cross_entropy(model(x), y)
