"""SalUn: random-label unlearning restricted to the weights most salient for the forget loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Iterator, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset, to_float
from ..data.loading import as_image_dataset, iter_batches
from . import register
from ._saliency import global_topk_mask, gradient_saliency, trainable_parameters
from .base import (Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData,
                   infer_num_classes)


@dataclass(frozen=True, kw_only=True)
class SalUnConfig(GradientConfig):
    """Hyper-parameters of `SalUn` (defaults: CIFAR-10 random 10 %, official README)."""

    epochs: int = 10
    lr: float = 0.013
    batch_size: int = 256
    mask_ratio: float = 0.5
    relabel: Literal["sequential", "fixed_wrong"] = "sequential"
    reference_parity: bool = False

    def validate(self) -> None:
        super().validate()
        self.check(0.0 < self.mask_ratio <= 1.0, f"mask_ratio must be in (0, 1], got {self.mask_ratio}")
        self.check(self.relabel in ("sequential", "fixed_wrong"),
                   f"relabel must be 'sequential' or 'fixed_wrong', got {self.relabel!r}")


@register("salun")
class SalUn(GradientMethod):
    """SalUn: random-label unlearning that updates only the salient weights.

    Paper:
        Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
        Classification and Generation", ICLR 2024, https://arxiv.org/abs/2310.12508

    Before training, the weight saliency ``s = |Σ_batches ∇_θ L_batch(θ_o; D_f)|`` is computed in eval mode
    over the forget set and one global mask ``m`` keeps the ``floor(mask_ratio · P)`` most salient entries
    of all P parameters. Random-label training (RL) then runs with gradients multiplied by ``m``:
    ``θ_u = m ⊙ (θ_o + Δθ) + (1 − m) ⊙ θ_o``. By default, after every step the frozen weights are reset to
    ``θ_o`` and their momentum to zero, so weight decay and momentum cannot move them either (the newest
    reference commit); ``reference_parity=True`` skips that reset, as in the code behind the published numbers.

    Args:
        mask_ratio: fraction of parameter entries kept trainable (γ set at the median: 0.5).
        relabel: ``sequential`` (each epoch: a pass over D_f with fresh uniform labels in [0, K), then a pass
            over D_r; SalUn's RL) or ``fixed_wrong`` (each forget sample gets one fixed wrong label; one
            shuffled pass over D_f ∪ D_r per epoch; SFR-on's RL).
        reference_parity: skip the reset of frozen weights and momentum after each step.
        epochs, lr, momentum, weight_decay, batch_size: RL training (10, 0.013, 0.9, 5e-4, 256).

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
    paper: ClassVar[str | None] = ("SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency "
                                   "(ICLR 2024), https://arxiv.org/abs/2310.12508")
    summary: ClassVar[str] = "random-label training on the forget-salient weights only (global top-k mask)"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    # --- setup: saliency mask ---------------------------------------------------------------------
    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        forget = as_image_dataset(data.forget)
        aug = data.augment if c.augment else None
        saliency = gradient_saliency(model, forget, batch_size=c.batch_size, device=ctx.device, augment=aug,
                                     generator=ctx.rng)
        self.mask_ = global_topk_mask(saliency, c.mask_ratio)
        params = trainable_parameters(model)
        self.theta0_ = {n: params[n].detach().clone() for n in self.mask_}
        self.num_classes_ = infer_num_classes(model, data)
        kept = sum(int(m.sum()) for m in self.mask_.values())
        total = sum(m.numel() for m in self.mask_.values())
        ctx.log(mask_kept=kept, mask_total=total)
        if c.relabel == "fixed_wrong":
            self.joint_ = self._joint_dataset(forget, as_image_dataset(data.retain), ctx)

    def _joint_dataset(self, forget: ImageDataset, retain: ImageDataset, ctx: RunContext) -> ImageDataset:
        k = self.num_classes_
        # A fixed label drawn uniformly from the K − 1 wrong classes.
        shift = torch.randint(1, k, (len(forget),), generator=ctx.rng)
        wrong = (forget.targets + shift) % k
        if forget.images.dtype == retain.images.dtype:
            images = torch.cat([forget.images, retain.images])
        else:
            images = torch.cat([to_float(forget.images), to_float(retain.images)])
        return ImageDataset(images, torch.cat([wrong, retain.targets]))

    # --- schedule and data ------------------------------------------------------------------------
    def schedule(self) -> Iterable[Phase]:
        if self.config.relabel == "fixed_wrong":
            yield Phase("joint", "retain", self.config.epochs)
            return
        for _ in range(self.config.epochs):
            yield Phase("forget", "forget")
            yield Phase("retain", "retain")

    def batches(self, phase: Phase, data: UnlearnData, ctx: RunContext) -> Iterator[Batch]:
        if phase.name != "joint":
            yield from super().batches(phase, data, ctx)
            return
        c = self.config
        aug = data.augment if c.augment else None
        for b in iter_batches(self.joint_, c.batch_size, shuffle=True, generator=ctx.rng, augment=aug,
                              device=ctx.device):
            yield Batch(retain=b)

    def total_steps(self, data: UnlearnData) -> int:
        c = self.config
        if c.relabel != "fixed_wrong":
            return super().total_steps(data)
        n = len(data.forget) + len(data.retain or [])  # type: ignore[arg-type]
        total = c.epochs * -(-n // c.batch_size)
        return min(total, c.max_steps) if c.max_steps is not None else total

    # --- loss and masked update -------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        if phase.name == "forget":
            x, y = batch.forget  # type: ignore[misc]
            # Fresh uniform labels per batch; they may coincide with the true label (reference RL).
            y_rand = torch.randint(0, self.num_classes_, (len(y),), generator=ctx.rng).to(y.device)
            loss = F.cross_entropy(model(x), y_rand)
            return StepOutput(loss, {"forget_loss": float(loss.detach())})
        x, y = batch.retain  # type: ignore[misc]
        loss = F.cross_entropy(model(x), y)
        return StepOutput(loss, {"retain_loss": float(loss.detach())})

    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        for n, p in trainable_parameters(model).items():
            if p.grad is not None and n in self.mask_:
                p.grad.mul_(self.mask_[n])

    def training_step(self, model: nn.Module, batch: Batch, phase: Phase, optimizer: torch.optim.Optimizer,
                      ctx: RunContext) -> StepOutput:
        out = super().training_step(model, batch, phase, optimizer, ctx)
        if not self.config.reference_parity:
            self._restore_frozen(model, optimizer)
        return out

    @torch.no_grad()
    def _restore_frozen(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Reset frozen entries to θ_o and zero their optimizer state (momentum, Adam moments)."""
        for n, p in trainable_parameters(model).items():
            mask = self.mask_.get(n)
            if mask is None:
                continue
            p.copy_(torch.where(mask.bool(), p, self.theta0_[n]))
            for value in optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(mask)


__all__ = ["SalUn", "SalUnConfig"]
