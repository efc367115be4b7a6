"""NegGrad+: descent on retain batches and ascent on forget batches in the same step."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn
from torch.nn import functional as F

from . import register
from .base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData


@dataclass(frozen=True, kw_only=True)
class NegGradPlusConfig(GradientConfig):
    """NegGrad+ settings; library defaults (methods.md §2.2 [OURS]): β 0.95, SGD 0.01 / 0.9 / 5e-4, 5 epochs.

    Args:
        beta: weight β of the retain loss; the forget loss gets ``1 − β``.
        l2_to_original: coefficient ``wd`` of the optional penalty ``(wd/2)·‖θ − θ_o‖²`` added to the retain
            term (from the SCRUB small-scale notebook); 0 turns it off.
    """

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 128
    beta: float = 0.95
    l2_to_original: float = 0.0

    def validate(self) -> None:
        super().validate()
        self.check(0.0 <= self.beta <= 1.0, f"beta must be in [0, 1], got {self.beta}")
        self.check(self.l2_to_original >= 0, f"l2_to_original must be ≥ 0, got {self.l2_to_original}")


@register("neggrad_plus", aliases=("neggrad+",))
class NegGradPlus(GradientMethod):
    """NegGrad+: a weighted combination of retain descent and forget ascent.

    Paper: Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (methods.md §2.2).

    One step on a retain batch ``B_r`` paired with a forget batch ``B_f`` minimises

        L(θ) = β · L_{B_r}(θ) − (1 − β) · L_{B_f}(θ)  [+ (wd/2)·‖θ − θ_o‖²]

    One epoch iterates every retain batch; each is paired with a forget batch drawn at random (seeded) from
    the forget set. β = 1 is FT; β = 0 is GA apart from the pairing.

    Args:
        beta: β, weight of the retain loss (default 0.95).
        l2_to_original: ``wd`` of the L2-to-original penalty (default 0, off).
        epochs, lr, batch_size: 5, 0.01, 128 (forget and retain batches have the same size).

    Requires: the retain and forget sets with labels.
    """

    Config = NegGradPlusConfig
    summary = "retain descent plus weighted forget ascent (SCRUB paper's NegGrad+)"
    paper = "Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023"
    guard_divergence = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        self.anchor_ = [p.detach().clone() for p in model.parameters()] if self.config.l2_to_original > 0 else None

    def schedule(self) -> Iterable[Phase]:
        yield Phase("neggrad_plus", "paired_retain", self.config.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        beta = self.config.beta
        xr, yr = batch.retain  # type: ignore[misc]
        retain_loss = F.cross_entropy(model(xr), yr)
        forget_loss = F.cross_entropy(model(batch.forget[0]), batch.forget[1])  # type: ignore[index]
        loss = beta * retain_loss - (1.0 - beta) * forget_loss
        anchor = getattr(self, "anchor_", None)
        if anchor is not None:
            dist = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor, strict=False))
            loss = loss + 0.5 * self.config.l2_to_original * dist
        return StepOutput(loss, {"retain_loss": retain_loss.detach(), "forget_loss": forget_loss.detach()})
