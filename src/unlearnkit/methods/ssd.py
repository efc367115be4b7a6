"""SSD: Selective Synaptic Dampening, a one-shot edit of parameters far more important for D_f than for D."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..data.datasets import ImageDataset, to_float
from ..data.loading import as_image_dataset
from . import register
from ._saliency import fisher_diagonal, trainable_parameters
from .base import Method, MethodConfig, RunContext, UnlearnData


@dataclass(frozen=True, kw_only=True)
class SSDConfig(MethodConfig):
    """Hyper-parameters of `SSD` (defaults: the official code for ResNet-18)."""

    dampening_constant: float = 1.0
    selection_weighting: float = 10.0
    batch_size: int = 128
    importance_set: Literal["full", "retain"] = "full"
    augment: bool = False

    def validate(self) -> None:
        super().validate()
        self.check(self.dampening_constant >= 0, f"dampening_constant (λ) must be ≥ 0, got {self.dampening_constant}")
        self.check(
            self.selection_weighting >= 0, f"selection_weighting (α) must be ≥ 0, got {self.selection_weighting}"
        )
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(
            self.importance_set in ("full", "retain"),
            f"importance_set must be 'full' or 'retain', got {self.importance_set!r}",
        )


@torch.no_grad()
def dampen(
    params: Mapping[str, torch.Tensor],
    importance_forget: Mapping[str, torch.Tensor],
    importance_data: Mapping[str, torch.Tensor],
    *,
    alpha: float,
    lam: float,
) -> dict[str, int]:
    """Apply SSD's rule in place and return the number of dampened entries per parameter.

    Where ``I_f > α · I_D`` (strict), ``θ ← β · θ`` with ``β = min(λ · I_D / I_f, 1)``; elsewhere ``θ`` is
    left bit-identical.
    """
    counts = {}
    for name, p in params.items():
        i_f, i_d = importance_forget[name].to(p.device), importance_data[name].to(p.device)
        selected = i_f > alpha * i_d
        beta = torch.where(
            selected,
            (lam * i_d / torch.where(selected, i_f, torch.ones_like(i_f))).clamp(max=1.0),
            torch.ones_like(i_f),
        )
        p.copy_(torch.where(selected, p * beta.to(p.dtype), p))
        counts[name] = int(selected.sum())
    return counts


@register("ssd", aliases=("selective_synaptic_dampening",))
class SSD(Method):
    """SSD: dampen the parameters that are much more important for the forget set than for the data.

    Paper:
        Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
        Dampening", AAAI 2024, https://arxiv.org/abs/2308.07707

    Retrain-free. In eval mode, the diagonal Fisher importances ``I_S = mean_batches (∂L_batch/∂θ)²`` are
    computed on ``D_f`` and on ``D = D_r ∪ D_f`` (or ``D_r`` with ``importance_set="retain"``). Every
    parameter entry with ``I_f > α · I_D`` is scaled by ``β = min(λ · I_D / I_f, 1)``; all others are
    unchanged. Nothing is trained.

    Args:
        dampening_constant: λ (1).
        selection_weighting: α (10 for ResNet-18; 5 for ViTs in the official code).
        batch_size: batch of the importance passes (128).
        importance_set: ``full`` (D_r ∪ D_f, the paper) or ``retain`` (D_r only).
        augment: use the dataset's training augmentation in the importance passes.

    Requires:
        a retain set and forget labels; random or class-wise forgetting.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data()
        >>> out = unlearnkit.unlearn(tiny_model(trained=True), d.forget, d.retain, method="ssd", device="cpu")
        >>> out.head.out_features
        4
    """

    Config: ClassVar[type[SSDConfig]] = SSDConfig
    paper: ClassVar[str | None] = (
        "Fast Machine Unlearning Without Retraining Through Selective Synaptic "
        "Dampening (AAAI 2024), https://arxiv.org/abs/2308.07707"
    )
    summary: ClassVar[str] = "one-shot: shrink parameters far more Fisher-important for D_f than for D"
    smoke_config: ClassVar[dict[str, Any]] = {"batch_size": 32}

    def importances(
        self,
        model: nn.Module,
        data: UnlearnData,
        ctx: RunContext,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(I_f, I_D)``: diagonal Fisher importances on the forget set and on the reference data."""
        c = self.config
        aug = data.augment if c.augment else None
        assert data.retain is not None  # requires.retain, checked before compute
        forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)
        if c.importance_set == "full":
            if forget.images.dtype == retain.images.dtype:
                images = torch.cat([retain.images, forget.images])
            else:
                images = torch.cat([to_float(retain.images), to_float(forget.images)])
            reference = ImageDataset(images, torch.cat([retain.targets, forget.targets]))
        else:
            reference = retain
        kw = {"batch_size": c.batch_size, "device": ctx.device, "augment": aug, "generator": ctx.rng, "shuffle": True}
        return fisher_diagonal(model, forget, **kw), fisher_diagonal(model, reference, **kw)

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        c = self.config
        model.to(ctx.device)
        i_f, i_d = self.importances(model, data, ctx)
        ctx.emit("setup_end")
        counts = dampen(trainable_parameters(model), i_f, i_d, alpha=c.selection_weighting, lam=c.dampening_constant)
        total = sum(t.numel() for t in i_f.values())
        ctx.log(dampened=sum(counts.values()), parameters=total)
        model.eval()
        return model


__all__ = ["SSD", "SSDConfig", "dampen"]
