"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..data.loading import as_image_dataset
from . import register
from ._saliency import global_topk_mask, gradient_saliency, trainable_parameters
from .base import RunContext, UnlearnData
from .random_label import RandomLabel, RandomLabelConfig


@dataclass(frozen=True, kw_only=True)
class SalUnConfig(RandomLabelConfig):
    """Hyper-parameters of `SalUn` (defaults: CIFAR-10 random 10 %, official README)."""

    epochs: int = 10
    lr: float = 0.013
    batch_size: int = 256
    mask_ratio: float = 0.5
    reference_parity: bool = False

    def validate(self) -> None:
        super().validate()
        self.check(0.0 < self.mask_ratio <= 1.0, f"mask_ratio must be in (0, 1], got {self.mask_ratio}")


@register("salun")
class SalUn(RandomLabel):
    """SalUn: random-label unlearning that updates only the salient weights.

    Paper:
        Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
        Classification and Generation", ICLR 2024, https://arxiv.org/abs/2310.12508

    SalUn is `RandomLabel` (``rl``) plus a saliency mask. Before training, the weight saliency
    ``s = |Σ_batches ∇_θ L_batch(θ_o; D_f)|`` is computed in eval mode over the forget set and one global
    mask ``m`` keeps the ``floor(mask_ratio · P)`` most salient entries of all P parameters. Random-label
    training (RL) then runs with gradients multiplied by ``m``: ``θ_u = m ⊙ (θ_o + Δθ) + (1 − m) ⊙ θ_o``.
    By default, after every step the frozen weights are reset to ``θ_o`` and their momentum to zero, so
    weight decay and momentum cannot move them either (the newest reference commit); ``reference_parity=True``
    skips that reset, as in the code behind the published numbers.

    Args:
        mask_ratio: fraction of parameter entries kept trainable (γ set at the median: 0.5).
        variant: ``sequential`` (each epoch: a pass over D_f with fresh uniform labels in [0, K), then a pass
            over D_r; SalUn's RL), ``fixed_wrong`` (each forget sample gets one fixed wrong label; one
            shuffled pass over D_f ∪ D_r per epoch; SFR-on's RL) or ``combined`` (one shuffled pass over
            D_f ∪ D_r per epoch, forget labels redrawn in [0, K) every epoch: the OPTML code when the SalUn
            paper was published), as in ``rl``.
        reference_parity: skip the reset of frozen weights and momentum after each step.
        epochs, lr, momentum, weight_decay, batch_size: RL training (10, 0.013, 0.9, the original's weight decay
            else 5e-4, 256).

    Requires:
        retain set and forget labels; random or class-wise forgetting.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> out = unlearnkit.unlearn(tiny_model(), tiny_data().forget, tiny_data().retain, method="salun",
        ...                          epochs=1, device="cpu")
        >>> out.head.out_features
        4
    """

    Config: ClassVar[type[SalUnConfig]] = SalUnConfig
    paper: ClassVar[str] = (
        "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency "
        "(ICLR 2024), https://arxiv.org/abs/2310.12508"
    )
    summary: ClassVar[str] = "random-label training on the forget-salient weights only (global top-k mask)"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    # --- setup: saliency mask, then RL's setup ------------------------------------------------------
    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        aug = data.augment if c.augment else None
        saliency = gradient_saliency(
            model,
            as_image_dataset(data.forget),
            batch_size=c.batch_size,
            device=ctx.device,
            augment=aug,
            generator=ctx.rng,
        )
        self.mask_ = global_topk_mask(saliency, c.mask_ratio)
        params = trainable_parameters(model)
        self.theta0_ = {n: params[n].detach().clone() for n in self.mask_}
        ctx.log(
            mask_kept=sum(int(m.sum()) for m in self.mask_.values()),
            mask_total=sum(m.numel() for m in self.mask_.values()),
        )
        super().setup(model, data, ctx)

    # --- masked update ----------------------------------------------------------------------------
    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        for n, p in trainable_parameters(model).items():
            if p.grad is not None and n in self.mask_:
                p.grad.mul_(self.mask_[n])

    @torch.no_grad()
    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
        """Reset frozen entries to θ_o and zero their optimizer state (momentum, Adam moments)."""
        if self.config.reference_parity:
            return
        for n, p in trainable_parameters(model).items():
            mask = self.mask_.get(n)
            if mask is None:
                continue
            p.copy_(torch.where(mask.bool(), p, self.theta0_[n]))
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(mask)


__all__ = ["SalUn", "SalUnConfig"]
