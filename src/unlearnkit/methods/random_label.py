"""Random Label (RL): train on the forget set with random labels, anchored by the retain set."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset
from . import register
from ._common import concat_images
from .base import Batch, GradientConfig, GradientMethod, Phase, RunContext, StepOutput, UnlearnData, infer_num_classes


@dataclass(frozen=True, kw_only=True)
class RandomLabelConfig(GradientConfig):
    """RL settings; defaults follow RL as a SalUn baseline (10 epochs, SGD 0.9 / 5e-4, batch 256, lr 0.01).

    Args:
        variant: ``sequential`` (OPTML/SalUn, methods.md §3 (a)): each epoch one pass over the forget set with
            fresh uniform labels in {0..K−1} (may equal the true label), then one pass over the retain set.
            ``fixed_wrong`` (SFR-on, §3 (b)): every forget sample gets one fixed label drawn uniformly from its
            K−1 wrong classes, and training runs on one shuffled loader over forget ∪ retain.
            ``combined`` (OPTML's CIFAR-100/TinyImageNet branch, and its CIFAR-10 code when the SalUn paper was
            published): one shuffled loader over forget ∪ retain per epoch, the forget labels redrawn uniformly
            in {0..K−1} at the start of every epoch.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 256
    variant: Literal["sequential", "fixed_wrong", "combined"] = "sequential"

    def validate(self) -> None:
        super().validate()
        self.check(
            self.variant in ("sequential", "fixed_wrong", "combined"),
            f"variant must be 'sequential', 'fixed_wrong' or 'combined', got {self.variant!r}",
        )


def wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A label drawn uniformly from the ``num_classes − 1`` classes other than ``y``, per sample."""
    if num_classes < 2:
        raise ValueError("random wrong labels need at least 2 classes")
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


@register("rl", aliases=("random_label", "random_labels"))
class RandomLabel(GradientMethod):
    """Random-label unlearning: tell the model that what it memorised about the forget set is noise.

    Paper: Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (as a baseline); RL of Fan et
    al., "SalUn", ICLR 2024 (methods.md §3).

    Minimises the cross-entropy on ``{(x, ỹ) : (x, y) ∈ D_f} ∪ D_r`` with ``ỹ`` a random label, network in
    ``train()`` mode. The two reference variants differ in how labels are drawn and how the data is ordered
    (see ``variant``).

    Args:
        variant: ``sequential`` (default; forget pass with fresh labels, then retain pass, per epoch),
            ``fixed_wrong`` (one fixed wrong label per forget sample, one shuffled loader over both sets) or
            ``combined`` (one shuffled loader over both sets, forget labels redrawn in {0..K−1} every epoch).
        epochs, lr, batch_size: 10, 0.01 (tuned in [0.01, 0.1]), 256.

    Requires: the retain and forget sets with labels.
    """

    Config = RandomLabelConfig
    summary = "train on the forget set with random labels plus the retain set"
    paper = "Fan et al., SalUn, ICLR 2024 (RL baseline); Golatkar et al., CVPR 2020"
    train_mode = True
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        self.num_classes_ = infer_num_classes(model, data)
        variant = self.config.variant
        if variant in ("fixed_wrong", "combined"):
            forget = as_image_dataset(data.forget)
            retain = as_image_dataset(data.retain)  # type: ignore[arg-type]
            self.num_forget_ = len(forget)
            if variant == "fixed_wrong":
                relabelled = wrong_labels(forget.targets, self.num_classes_, ctx.rng)
            else:
                relabelled = torch.randint(0, self.num_classes_, (len(forget),), generator=ctx.rng)
            # forget samples first, then the retain set; the loop reads the labels batch by batch
            self.union_ = ImageDataset(
                concat_images(forget.images, retain.images), torch.cat([relabelled, retain.targets])
            )

    def schedule(self) -> Iterable[Phase]:
        if self.config.variant == "fixed_wrong":
            yield Phase("relabelled_union", self.union_, self.config.epochs)
            return
        if self.config.variant == "combined":
            yield Phase("combined_union", self.union_, self.config.epochs)
            return
        for _ in range(self.config.epochs):
            yield Phase("forget_random_labels", "forget", 1)
            yield Phase("retain", "retain", 1)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        if phase.name == "forget_random_labels":
            x, _ = batch.forget  # type: ignore[misc]
            # Fresh uniform labels per batch; they may coincide with the true label (reference RL).
            y = torch.randint(0, self.num_classes_, (len(x),), generator=ctx.rng).to(x.device)
            loss = F.cross_entropy(model(x), y)
            return StepOutput(loss, {"forget_loss": loss.detach()})
        x, y = batch.mixed if batch.mixed is not None else batch.retain  # type: ignore[misc]
        loss = F.cross_entropy(model(x), y)
        return StepOutput(loss, {"retain_loss": loss.detach()})

    def on_epoch_end(self, model: nn.Module, phase: Phase, ctx: RunContext) -> None:
        if phase.name == "combined_union":  # OPTML: fresh uniform forget labels for the next epoch
            self.union_.targets[: self.num_forget_] = torch.randint(
                0, self.num_classes_, (self.num_forget_,), generator=ctx.rng
            )
