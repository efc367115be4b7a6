"""DUCK: pull forget embeddings to the nearest wrong class centroid, keep retain data classified (CE)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from . import register
from ._embedding import check_embedding_model, embed, multistep_lr, nearest_wrong_targets, relabelled
from .base import (
    Batch,
    GradientConfig,
    GradientMethod,
    Phase,
    RunContext,
    StepOutput,
    UnlearnData,
    infer_num_classes,
)


# --------------------------------------------------------------------------------------------- helpers
def cosine_pull(z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DUCK's forget term ``mean_i(1 − cos(z_i, μ_{t_i}))`` for target centroids ``targets`` (n, d)."""
    return (1 - F.cosine_similarity(z, targets.to(z.dtype), dim=1)).mean()


# ----------------------------------------------------------------------------------------------- method
@dataclass(frozen=True, kw_only=True)
class DuckConfig(GradientConfig):
    """Hyper-parameters of `Duck` (defaults: the official code for class removal, methods.md §12.3)."""

    epochs: int = 200
    lr: float = 4e-4
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    batch_size: int = 256
    lambda_forget: float = 1.0
    lambda_retain: float = 1.4
    temperature: float = 2.0
    ratio: int = 5
    centroid_batches: int = 50
    milestones: tuple[int, ...] = (25, 40)
    gamma: float = 0.5
    label_smoothing: float = 0.0
    stop_at_target: bool | None = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))  # TOML gives a list
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self.check(self.lambda_forget >= 0, f"lambda_forget must be ≥ 0, got {self.lambda_forget}")
        self.check(self.lambda_retain >= 0, f"lambda_retain must be ≥ 0, got {self.lambda_retain}")
        self.check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.check(self.ratio >= 0, f"ratio must be ≥ 0, got {self.ratio}")
        self.check(self.centroid_batches >= 1, f"centroid_batches must be ≥ 1, got {self.centroid_batches}")
        self.check(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        self.check(0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self.check(all(int(m) >= 1 for m in self.milestones), f"milestones must be ≥ 1, got {self.milestones}")


@register("duck")
class Duck(GradientMethod):
    """DUCK: Distance-based Unlearning via Centroid Kinematics (metric learning in the embedding space).

    Paper:
        Cotogni, Bonato, Sabetta, Pelosin, Nicolosi, "DUCK: Distance-based Unlearning via Centroid
        Kinematics", 2023, https://arxiv.org/abs/2312.02052 (methods.md §12.3)

    With ``φ`` the backbone (``model.forward_features``, flattened) and ``h`` the head:

    1. Centroids (``φ`` in eval mode, no gradient): ``μ_k`` = mean ``φ(x)`` of class ``k`` over
       ``centroid_batches`` random retain batches; the forgotten class(es) get no centroid.
    2. Targets, computed once before training and then fixed per forget *sample* (the reference keys them by
       forget-batch index, which needs an unshuffled loader): ``t(x) = argmin_k 1 − cos(φ(x), μ_k)``, or the
       second nearest when the nearest is the sample's own class.
    3. Training (train mode, Adam, MultiStepLR with ``milestones`` and factor ``gamma`` per epoch): each forget
       batch is used for ``ratio + 1`` steps, each with a fresh retain batch, minimising
       ``λ1 · mean(1 − cos(φ(x_f), μ_{t(x_f)})) + λ2 · CE(h(φ(x_r)) / T, y_r)``.
       After every epoch the run stops once forget accuracy reaches its target (``stop_at_target``: ≤ 1 % for a
       forgotten class, ≈ test accuracy for random samples).

    Targets are computed from ``θ_o`` before the first step (the reference computes each batch's target
    during the first epoch with the partly updated model). The optional "low forget regime" second phase
    of the authors' ``src`` version is not implemented (off by default there).

    Args:
        lambda_forget: λ1 (1). lambda_retain: λ2 (1.4). temperature: T of the retain CE (2).
        ratio: retain batches per forget batch minus one (5 ⇒ 6 steps per forget batch).
        centroid_batches: retain batches embedded for the centroids (50).
        milestones, gamma: MultiStepLR (25, 40; 0.5), counted in epochs.
        label_smoothing: of the retain CE (0).
        epochs: at most this many passes over the forget set (200); lr 4e-4, Adam, wd 0, batch 256.
        stop_at_target: early stop after an epoch (on by default, as in the paper).

    Requires:
        forget and retain sets with labels; a model with ``forward_features`` and ``head``.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import create_method
        >>> out = create_method("duck", epochs=1, batch_size=16).unlearn(tiny_model(), tiny_data())
    """

    Config: ClassVar[type[DuckConfig]] = DuckConfig
    paper: ClassVar[str | None] = (
        "DUCK: Distance-based Unlearning via Centroid Kinematics (2023), https://arxiv.org/abs/2312.02052"
    )
    summary: ClassVar[str] = "pull forget embeddings to the nearest wrong class centroid, CE on retain data"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 16, "ratio": 1, "centroid_batches": 2}
    train_mode: ClassVar[bool] = True

    def check_compatible(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        check_embedding_model(model, self.name)
        super().check_compatible(model, data, ctx)

    @torch.no_grad()
    def centroids(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> torch.Tensor:
        """(K, d) class means of φ on ``centroid_batches`` random retain batches; NaN rows for absent classes."""
        c = self.config
        assert data.retain is not None  # requires.retain, checked before compute
        k = infer_num_classes(model, data)
        was = model.training
        model.eval()
        sums: torch.Tensor | None = None
        counts = torch.zeros(k, device=ctx.device)
        batches = iter_batches(
            as_image_dataset(data.retain), c.batch_size, shuffle=True, generator=ctx.rng, device=ctx.device
        )
        for i, (x, y) in enumerate(batches):
            if i >= c.centroid_batches:
                break
            z = embed(model, x).float()
            if sums is None:
                sums = torch.zeros(k, z.shape[1], device=ctx.device)
            sums.index_add_(0, y, z)
            counts += torch.bincount(y, minlength=k).float()
        model.train(was)
        assert sums is not None
        mu = sums / counts.clamp_min(1)[:, None]
        mu[counts == 0] = float("nan")
        for cls in data.forget_classes:  # class removal: the forgotten class gets no centroid
            mu[cls] = float("nan")
        return mu

    @staticmethod
    def cosine_distances(z: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
        """(n, K) ``1 − cos(z_i, μ_k)``; ``inf`` where ``μ_k`` is absent (NaN)."""
        absent = torch.isnan(mu).any(dim=1)
        d = 1 - F.normalize(z, dim=1) @ F.normalize(torch.nan_to_num(mu), dim=1).T
        return d.masked_fill(absent[None, :], float("inf"))

    @torch.no_grad()
    def targets(self, model: nn.Module, forget: ImageDataset, mu: torch.Tensor, ctx: RunContext) -> torch.Tensor:
        """The fixed target class of every forget sample (nearest wrong centroid in cosine distance)."""
        was = model.training
        model.eval()
        out = []
        for x, y in iter_batches(forget, self.config.batch_size, device=ctx.device):
            out.append(nearest_wrong_targets(self.cosine_distances(embed(model, x).float(), mu), y))
        model.train(was)
        return torch.cat(out).cpu()

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        forget = as_image_dataset(data.forget)
        self.mu_ = self.centroids(model, data, ctx)
        self.forget_targets_ = self.targets(model, forget, self.mu_, ctx)
        self.forget_batches_ = -(-len(forget) // c.batch_size)
        # Labels of this set are the fixed target classes; the forget term never reads the true labels.
        self.targeted_ = relabelled(forget, self.forget_targets_)

    def schedule(self) -> Iterable[Phase]:
        # Each forget batch (the partner stream, one pass per epoch) is held for ratio + 1 retain steps.
        every = self.config.ratio + 1
        for e in range(self.config.epochs):
            yield Phase(
                f"epoch{e + 1}",
                "retain",
                steps=self.forget_batches_ * every,
                epoch=e + 1,
                partner="forget",
                partner_data=self.targeted_,
                partner_every=every,
                hold=True,
            )

    def lr_at(self, step: int, total: int, epoch: int) -> float:
        c = self.config
        return multistep_lr(c.lr, epoch, tuple(int(m) for m in c.milestones), c.gamma)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        c = self.config
        xf, tf = batch.forget  # type: ignore[misc]  # the held partner batch: images and their target classes
        xr, yr = batch.retain  # type: ignore[misc]
        # One forward pass for both parts (one BatchNorm batch per step).
        z = embed(model, torch.cat([xf, xr]))
        zf, zr = z[: len(xf)], z[len(xf) :]
        l_f = cosine_pull(zf, self.mu_[tf])
        logits = model.head(zr)  # type: ignore[operator]
        l_r = F.cross_entropy(logits / c.temperature, yr, label_smoothing=c.label_smoothing)
        loss = c.lambda_forget * l_f + c.lambda_retain * l_r
        return StepOutput(loss, {"forget_distance": l_f.detach(), "retain_ce": l_r.detach()})


__all__ = [
    "Duck",
    "DuckConfig",
    "check_embedding_model",
    "cosine_pull",
    "embed",
    "multistep_lr",
    "nearest_wrong_targets",
]
