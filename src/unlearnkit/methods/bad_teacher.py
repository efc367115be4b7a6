"""Bad Teacher: distil the original on retain samples and a randomly initialised network on forget samples."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset
from . import register
from ._common import concat_images, reinitialize_
from .base import (
    Batch,
    GradientConfig,
    GradientMethod,
    Phase,
    Requirements,
    RunContext,
    StepOutput,
    UnlearnData,
    frozen_copy,
)


@dataclass(frozen=True, kw_only=True)
class BadTeacherConfig(GradientConfig):
    """Hyper-parameters of `BadTeacher` (defaults: the official code)."""

    epochs: int = 1
    lr: float = 1e-4
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    batch_size: int = 256
    temperature: float = 1.0
    retain_fraction: float = 0.3

    def validate(self) -> None:
        super().validate()
        self.check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.check(0.0 <= self.retain_fraction <= 1.0, f"retain_fraction must be in [0, 1], got {self.retain_fraction}")


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` re-initialised from ``seed`` (see `reinitialize_`: the same on every
    device, no global generator touched). Input normalisation (buffers only) is kept."""
    return frozen_copy(reinitialize_(copy.deepcopy(model), seed))


@register("bt", aliases=("bad_teacher", "blindspot"))
class BadTeacher(GradientMethod):
    """Bad Teacher: competent teacher on retain samples, incompetent (random) teacher on forget samples.

    Paper:
        Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks using an
        Incompetent Teacher", AAAI 2023, https://arxiv.org/abs/2205.08096

    The student starts from ``θ_o`` and is trained (train mode) on shuffled batches mixing all of ``D_f``
    (tag ``u = 1``) with a random ``retain_fraction`` of ``D_r`` (``u = 0``) to minimise
    ``KL(q ‖ softmax(S(x)/τ))`` with ``q = u · softmax(T_inc(x)/τ) + (1 − u) · softmax(T_comp(x)/τ)``.
    ``T_comp`` is the frozen original and ``T_inc`` a freshly initialised network of the same architecture
    (seeded from the run's RNG). The KL uses PyTorch's ``reduction='mean'`` (sum over batch and classes
    divided by ``B · K``), as the official code does.

    Args:
        temperature: τ of both softmaxes (1).
        retain_fraction: fraction of ``D_r`` drawn once per run for distillation (0.3).
        epochs, optimizer, lr, weight_decay, batch_size: student training (1, Adam, 1e-4, 0, 256).

    Requires:
        the original model (competent teacher) and a retain set; labels are not used.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data()
        >>> out = unlearnkit.unlearn(tiny_model(), d.forget, d.retain, method="bt", device="cpu")
        >>> out.head.out_features
        4
    """

    Config: ClassVar[type[BadTeacherConfig]] = BadTeacherConfig
    requires: ClassVar[Requirements] = Requirements(original_model=True, labels=False)
    paper: ClassVar[str | None] = (
        "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks using an "
        "Incompetent Teacher (AAAI 2023), https://arxiv.org/abs/2205.08096"
    )
    summary: ClassVar[str] = "distil the original on retain data and a random network on forget data"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.rng))
        assert ctx.original is not None and data.retain is not None  # declared requirements, checked before setup
        self.competent_: nn.Module = ctx.original
        self.incompetent_ = random_init_copy(ctx.original, seed)
        forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)
        n_keep = round(c.retain_fraction * len(retain))
        keep = torch.randperm(len(retain), generator=ctx.rng)[:n_keep]
        retain = retain.subset(keep.numpy())
        images = concat_images(forget.images, retain.images)
        # Targets hold the row index; membership and true labels are looked up per batch.
        self.mix_ = ImageDataset(images, torch.arange(len(images)))
        self.is_forget_ = torch.cat([torch.ones(len(forget), dtype=torch.bool), torch.zeros(n_keep, dtype=torch.bool)])
        self.labels_ = torch.cat([forget.targets, retain.targets])

    def schedule(self) -> Iterable[Phase]:
        yield Phase("distill", self.mix_, self.config.epochs)

    def split_batch(self, batch: Batch) -> Batch:
        """A batch of the mixed set, split by membership into its forget part and its retain part."""
        x, idx = batch.mixed  # type: ignore[misc]
        idx = idx.cpu()
        u, y = self.is_forget_[idx].to(x.device), self.labels_[idx].to(x.device)
        return Batch(forget=(x[u], y[u]), retain=(x[~u], y[~u]))

    @torch.no_grad()
    def soft_targets(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(q_forget, q_retain)``: softmax(T_inc/τ) on the forget part, softmax(T_comp/τ) on the retain part."""
        tau = self.config.temperature
        xf, xr = batch.forget[0], batch.retain[0]  # type: ignore[index]
        k = self.competent_(xf[:1] if len(xf) else xr[:1]).shape[1]
        q_f = F.softmax(self.incompetent_(xf) / tau, dim=1) if len(xf) else xf.new_zeros(0, k)
        q_r = F.softmax(self.competent_(xr) / tau, dim=1) if len(xr) else xr.new_zeros(0, k)
        return q_f, q_r

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        tau = self.config.temperature
        batch = self.split_batch(batch) if batch.mixed is not None else batch
        q_f, q_r = self.soft_targets(batch)
        x = torch.cat([batch.forget[0], batch.retain[0]])  # type: ignore[index]
        log_s = F.log_softmax(model(x) / tau, dim=1)
        # Sum over batch and classes divided by B·K: the official code's ``reduction="mean"`` (written out,
        # because PyTorch deprecates that reduction for kl_div); it only rescales the lr by 1/K.
        loss = F.kl_div(log_s, torch.cat([q_f, q_r]), reduction="sum") / log_s.numel()
        return StepOutput(loss, {"kl": loss.detach()})


__all__ = ["BadTeacher", "BadTeacherConfig", "random_init_copy"]
