"""LS (UGradSL): gradient-ascent unlearning with negative label smoothing on the forget set, descent on retain."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from . import register
from .base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData, infer_num_classes

_PAPER = (
    "Di, Zhu, Jia, Liu, Takhirov, Jiang, Yao, Liu, Liu, Label Smoothing Improves Machine Unlearning (2024), "
    "https://arxiv.org/abs/2406.07698"
)


@dataclass(frozen=True, kw_only=True)
class LabelSmoothingConfig(GradientConfig):
    """LS settings. methods.md has no section on it: every default is [RECALL] of the paper, to be tuned.

    Args:
        smoothing: α, the generalized-label-smoothing rate of the forget targets; must be ≤ 0 (negative label
            smoothing; 0 is plain GA / NegGrad+). Constant over the whole run.
        variant: ``plus`` (UGradSL+: β · CE on retain − (1 − β) · CE_α on forget, paired batches) or ``ga``
            (UGradSL: − CE_α on forget batches only; then the retain set is not read).
        beta: β, the weight of the retain loss in ``plus``.
    """

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    smoothing: float = -0.5
    variant: Literal["plus", "ga"] = "plus"
    beta: float = 0.9

    def validate(self) -> None:
        super().validate()
        self.check(
            self.smoothing <= 0,
            f"smoothing (α) must be ≤ 0 for unlearning (negative label smoothing), got {self.smoothing}",
        )
        self.check(self.variant in ("plus", "ga"), f"variant must be 'plus' or 'ga', got {self.variant!r}")
        self.check(0.0 <= self.beta <= 1.0, f"beta must be in [0, 1], got {self.beta}")


def smoothed_targets(y: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """Generalized label smoothing: ``t = (1 − α) · onehot(y) + α / K``.

    The true class gets ``1 − α + α/K`` and every other class ``α/K``; the row sums to 1. For α < 0 the true
    class's weight exceeds 1 and the others are negative.
    """
    onehot = F.one_hot(y, num_classes).to(torch.float32)
    return (1.0 - alpha) * onehot + alpha / num_classes


def smoothed_cross_entropy(logits: torch.Tensor, y: torch.Tensor, alpha: float) -> torch.Tensor:
    """``mean_i −Σ_k t_ik · log softmax(z_i)_k`` with the smoothed targets ``t`` (`smoothed_targets`)."""
    t = smoothed_targets(y, logits.shape[1], alpha).to(logits.device, logits.dtype)
    return -(t * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@register("ls", aliases=("label_smoothing", "ugradsl"))
class LabelSmoothing(GradientMethod):
    """LS / UGradSL: gradient ascent on the forget set toward negatively smoothed labels, descent on retain.

    Paper:
        Di et al., "Label Smoothing Improves Machine Unlearning", 2024 (arXiv 2406.07698); the tutorial's "LS".
        methods.md has no section on it and the official code (``UCSC-REAL/Label-Smoothing-Unlearn``) was not
        available here: what follows is [RECALL] of the paper.

    With generalized label smoothing ``t_α(y) = (1 − α) · onehot(y) + α/K`` and ``CE_α(z, y) = −Σ_k t_α(y)_k ·
    log softmax(z)_k``, one step on a retain batch paired with a random forget batch minimises (``plus``)

        L(θ) = β · CE(f(x_r), y_r) − (1 − β) · CE_α(f(x_f), y_f),        α < 0 (negative label smoothing),

    or only ``−CE_α(f(x_f), y_f)`` over forget batches (``ga``). The gradient of the forget term with respect to
    the logits is ``−(p − t_α)``: at a confidently memorised sample (``p ≈ onehot(y)``) plain GA's gradient
    vanishes, while with α < 0 it stays ``−α·(onehot(y) − 1/K)`` ≠ 0, pushing the true class down and every
    other class up. α is constant over the run (no schedule). Ascent-type: the divergence guard is on.

    Args:
        smoothing: α (−0.5 [RECALL]; must be ≤ 0). variant: ``plus`` (default) or ``ga``.
        beta: β of ``plus`` (0.9 [RECALL]). epochs, lr, batch_size: 5, 0.01, 128 (SGD 0.9 / 5e-4).

    Requires: the forget set with labels; the retain set for ``plus`` (always declared: ``ga`` does not read it).
    """

    Config = LabelSmoothingConfig
    summary = "gradient ascent with negative label smoothing on the forget set, descent on retain (UGradSL)"
    paper = _PAPER
    train_mode = True
    guard_divergence = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        self.num_classes_ = infer_num_classes(model, data)

    def schedule(self) -> Iterable[Phase]:
        c = self.config
        if c.variant == "ga":
            yield Phase("ls_ascent", "forget", c.epochs)
        else:
            yield Phase("ls_plus", "paired_retain", c.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        c = self.config
        xf, yf = batch.forget  # type: ignore[misc]
        forget_loss = smoothed_cross_entropy(model(xf), yf, c.smoothing)
        if c.variant == "ga":
            return StepOutput(-forget_loss, {"forget_loss": forget_loss.detach()})
        xr, yr = batch.retain  # type: ignore[misc]
        retain_loss = F.cross_entropy(model(xr), yr)
        loss = c.beta * retain_loss - (1.0 - c.beta) * forget_loss
        return StepOutput(loss, {"retain_loss": retain_loss.detach(), "forget_loss": forget_loss.detach()})


__all__ = ["LabelSmoothing", "LabelSmoothingConfig", "smoothed_cross_entropy", "smoothed_targets"]
