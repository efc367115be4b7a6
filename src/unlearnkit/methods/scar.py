"""SCAR: push forget features to the nearest wrong class under a Mahalanobis distance, distil on surrogate images."""

from __future__ import annotations

import math
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
    Requirements,
    RunContext,
    StepOutput,
    UnlearnData,
    infer_num_classes,
)


# ------------------------------------------------------------------------------------------------- maths
def tukey(features: torch.Tensor, beta: float) -> torch.Tensor:
    """Tukey's ladder ``φ^β`` of non-negative (post-ReLU) features, with a finite gradient at 0."""
    pos = features > 0
    safe = torch.where(pos, features, torch.ones_like(features))
    return torch.where(pos, safe**beta, torch.zeros_like(features))


def shrunk_precision(cov: torch.Tensor, gamma1: float, gamma2: float) -> torch.Tensor:
    """``pinv(Σ'')`` with ``Σ' = Σ + γ1·V1·I + γ2·V2·(1 − I)`` and ``Σ'' = Σ' / (σσᵀ)``, ``σ = sqrt(diag Σ')``.

    ``V1`` is the mean of the diagonal of ``Σ``, ``V2`` the mean of its non-zero off-diagonal entries.
    """
    cov = cov.double()
    d = cov.shape[0]
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    v1 = cov.diagonal().mean()
    off = cov[~eye.bool()]
    off = off[off != 0]
    v2 = off.mean() if off.numel() else cov.new_zeros(())
    shrunk = cov + gamma1 * v1 * eye + gamma2 * v2 * (1 - eye)
    sigma = shrunk.diagonal().clamp_min(torch.finfo(cov.dtype).tiny).sqrt()
    return torch.linalg.pinv(shrunk / (sigma[:, None] * sigma[None, :]))


def class_statistics(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    *,
    gamma1: float,
    gamma2: float,
    covariance: Literal["class", "shared"] = "class",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, S⁻¹)``: L2-normalised class means (K, d) and precision matrices (K, d, d) of (Tukey-transformed)
    features; NaN for classes with fewer than two samples. ``covariance="shared"`` uses the pooled
    within-class covariance for every class."""
    f = features.double()
    d = f.shape[1]
    means = torch.full((num_classes, d), float("nan"), dtype=f.dtype, device=f.device)
    covs = torch.full((num_classes, d, d), float("nan"), dtype=f.dtype, device=f.device)
    for k in range(num_classes):
        fk = f[labels == k]
        if len(fk) < 2:
            continue
        means[k] = fk.mean(0)
        covs[k] = torch.cov(fk.T, correction=1).reshape(d, d)
    present = ~torch.isnan(means).any(1)
    if covariance == "shared" and present.any():
        centred = torch.cat([f[labels == k] - means[k] for k in range(num_classes) if present[k]])
        pooled = centred.T @ centred / max(len(centred) - int(present.sum()), 1)
        covs[present] = pooled
    precisions = torch.full_like(covs, float("nan"))
    for k in range(num_classes):
        if present[k]:
            precisions[k] = shrunk_precision(covs[k], gamma1, gamma2)
    return F.normalize(means, dim=1), precisions


def mahalanobis(u: torch.Tensor, means: torch.Tensor, precisions: torch.Tensor) -> torch.Tensor:
    """(n, K) squared distances ``(u − m_k)ᵀ S_k⁻¹ (u − m_k)`` of L2-normalised features ``u`` (n, d)."""
    diff = u[:, None, :].to(means.dtype) - means[None, :, :]  # n, K, d
    return torch.einsum("nkd,kde,nke->nk", diff, precisions, diff)


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(p_o ‖ p_u)`` of the temperature-``T`` softmaxes, ``reduction='batchmean'``."""
    return F.kl_div(
        F.log_softmax(student / temperature, dim=1),
        F.log_softmax(teacher / temperature, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def synthetic_surrogates(n: int, channels: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` structured out-of-distribution images (uint8, n×C×H×W) drawn from ``generator`` only.

    A third each of: smooth noise (Gaussian noise on a 2–6 pixel grid, bilinearly upsampled), oriented
    sinusoidal gratings (random frequency, angle, phase, per-channel contrast), and random rectangles on a
    random background. Nothing is downloaded and no dataset file is read.
    """
    kinds = torch.randint(0, 3, (n,), generator=generator)
    out = torch.empty(n, channels, height, width)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    for i in range(n):
        kind = int(kinds[i])
        if kind == 0:
            grid = int(torch.randint(2, 7, (1,), generator=generator))
            coarse = torch.randn(1, channels, grid, grid, generator=generator)
            img = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0]
            img = torch.sigmoid(1.5 * img)
        elif kind == 1:
            freq = 1 + 5 * float(torch.rand((), generator=generator))
            angle = math.pi * float(torch.rand((), generator=generator))
            phase = 2 * math.pi * float(torch.rand((), generator=generator))
            wave = torch.sin(2 * math.pi * freq * (math.cos(angle) * xx + math.sin(angle) * yy) + phase)
            contrast = torch.rand(channels, 1, 1, generator=generator)
            base = torch.rand(channels, 1, 1, generator=generator)
            img = (base + 0.5 * contrast * wave).clamp(0, 1)
        else:
            img = torch.rand(channels, 1, 1, generator=generator).expand(channels, height, width).clone()
            for _ in range(int(torch.randint(1, 4, (1,), generator=generator))):
                y0 = int(torch.randint(0, height, (1,), generator=generator))
                x0 = int(torch.randint(0, width, (1,), generator=generator))
                h = int(torch.randint(1, max(height // 2, 1) + 1, (1,), generator=generator))
                w = int(torch.randint(1, max(width // 2, 1) + 1, (1,), generator=generator))
                img[:, y0 : y0 + h, x0 : x0 + w] = torch.rand(channels, 1, 1, generator=generator)
        out[i] = img
    return (out * 255).round().to(torch.uint8)


# ----------------------------------------------------------------------------------------------- method
@dataclass(frozen=True, kw_only=True)
class ScarConfig(GradientConfig):
    """Hyper-parameters of `Scar` (defaults: the official code for CIFAR-10, methods.md §12.4)."""

    epochs: int = 200
    lr: float = 5e-4
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    weight_decay: float = 0.0
    batch_size: int = 1024
    lambda_forget: float = 1.0
    lambda_distill: float = 5.0
    temperature: float = 2.0
    beta: float = 0.5
    gamma1: float = 3.0
    gamma2: float = 3.0
    covariance: Literal["class", "shared"] = "class"
    surrogate_ratio: int = 1
    surrogate_size: int = 5000
    milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.5
    stop_at_target: bool | None = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))  # TOML gives a list
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self.check(self.lambda_forget >= 0, f"lambda_forget must be ≥ 0, got {self.lambda_forget}")
        self.check(self.lambda_distill >= 0, f"lambda_distill must be ≥ 0, got {self.lambda_distill}")
        self.check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.check(0 < self.beta <= 1, f"beta (Tukey exponent) must be in (0, 1], got {self.beta}")
        self.check(self.gamma1 >= 0 and self.gamma2 >= 0, "gamma1 and gamma2 (shrinkage) must be ≥ 0")
        self.check(
            self.covariance in ("class", "shared"), f"covariance must be 'class' or 'shared', got {self.covariance!r}"
        )
        self.check(self.surrogate_ratio >= 1, f"surrogate_ratio must be ≥ 1, got {self.surrogate_ratio}")
        self.check(self.surrogate_size >= 1, f"surrogate_size must be ≥ 1, got {self.surrogate_size}")
        self.check(0 < self.lr_gamma <= 1, f"lr_gamma must be in (0, 1], got {self.lr_gamma}")


@register("scar")
class Scar(GradientMethod):
    """SCAR: Mahalanobis-distance forgetting plus distillation of the original on out-of-distribution images.

    Paper:
        Bonato, Cotogni, Sabetta, "Is Retain Set All You Need in Machine Unlearning? Restoring Performance of
        Unlearned Models with Out-Of-Distribution Images", ECCV 2024, https://arxiv.org/abs/2404.12922
        (methods.md §12.4)

    1. Statistics (``θ_o`` in eval mode, read-only, no gradient): for the post-ReLU penultimate features
       ``φ`` (``model.forward_features``) of the retain set, Tukey ``φ̃ = φ^β``; per class the mean ``μ_k``
       and covariance ``Σ_k`` (``covariance="shared"``: the pooled within-class covariance), shrinkage
       ``Σ' = Σ + γ1·V1·I + γ2·V2·(1 − I)``, correlation normalisation ``Σ'' = Σ'/(σσᵀ)``,
       ``S_k⁻¹ = pinv(Σ'')``, ``m_k = μ_k/‖μ_k‖``. The forgotten class has no retain data, hence no statistics.
    2. Distance: ``d_M(x, k) = (u − m_k)ᵀ S_k⁻¹ (u − m_k)`` with ``u = φ̃(x)/‖φ̃(x)‖`` (squared, no root).
    3. Targets: nearest class distribution, or the second nearest if that is the sample's own label; computed
       from ``θ_o`` before the first step and fixed per forget sample.
    4. Training (train mode, Adam): each forget batch is used for ``surrogate_ratio`` steps, each with a fresh
       surrogate batch, minimising ``λ1 · mean d_M(x_f, t) + λ2 · KL(p_o ‖ p_u)`` (temperature ``T`` on both
       softmaxes, ``batchmean``) on the surrogate batch. In class removal, surrogates the original predicts as
       a forgotten class are left out of the distillation and the teacher's logit of the forgotten class is
       set to the minimum logit. Early stop after an epoch as in DUCK (``stop_at_target``).

    No gradient step ever uses a retain sample: the retain set is read once, for the class statistics
    (the paper stores them at training time).

    Surrogate (OOD) images: the paper uses a random ImageNet subset; this library never downloads at run
    time, so ``surrogate_size`` images are synthesised from ``ctx.rng`` at the forget images' shape (channels
    and size): smooth noise, oriented gratings and random rectangles (`synthetic_surrogates`). We chose
    synthetic patterns over scikit-learn's bundled digits because digits *is* one of our datasets (it would
    be in-distribution there, and it has one channel for RGB datasets), while patterns fit any shape and
    dataset. The paper reports that plain Gaussian noise works clearly worse than natural images; these
    structured patterns sit in between, so expect a larger retain cost than the paper's on CIFAR.

    Args:
        lambda_forget: λ1 (1). lambda_distill: λ2 (5). temperature: T (2).
        beta: Tukey exponent β (0.5). gamma1, gamma2: shrinkage γ1, γ2 (3, 3).
        covariance: ``class`` (per-class Σ_k, the reference) or ``shared`` (pooled within-class).
        surrogate_ratio: surrogate batches per forget batch (1 for CIFAR-10, 5 CIFAR-100, 90 TinyImageNet).
        surrogate_size: synthetic images generated per run (5,000).
        milestones, lr_gamma: optional MultiStepLR over epochs (none by default).
        epochs: at most this many passes over the forget set (200); Adam lr 5e-4, wd 0, batch 1,024.

    Requires:
        forget set with labels, the original model (teacher), and the retain set for the class statistics only.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import RunContext, create_method, frozen_copy
        >>> m = tiny_model()
        >>> out = create_method("scar", epochs=1, batch_size=16, surrogate_size=32).unlearn(
        ...     m, tiny_data(), RunContext(original=frozen_copy(m)))
    """

    Config: ClassVar[type[ScarConfig]] = ScarConfig
    requires: ClassVar[Requirements] = Requirements(original_model=True)
    paper: ClassVar[str | None] = (
        "Is Retain Set All You Need in Machine Unlearning? Restoring Performance of Unlearned Models with "
        "Out-Of-Distribution Images (ECCV 2024), https://arxiv.org/abs/2404.12922"
    )
    summary: ClassVar[str] = "Mahalanobis pull to the nearest wrong class + distillation on synthetic OOD images"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 16, "surrogate_size": 64}
    train_mode: ClassVar[bool] = True

    def check_compatible(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        check_embedding_model(model, self.name)
        super().check_compatible(model, data, ctx)

    def features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``u``: the L2-normalised Tukey-transformed penultimate features."""
        return F.normalize(tukey(embed(model, x).float(), self.config.beta), dim=1)

    @torch.no_grad()
    def statistics(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.config
        assert data.retain is not None  # requires.retain, checked before compute
        was = model.training
        model.eval()
        feats, labels = [], []
        for x, y in iter_batches(as_image_dataset(data.retain), c.batch_size, device=ctx.device):
            feats.append(tukey(embed(model, x).float(), c.beta))
            labels.append(y)
        model.train(was)
        k = infer_num_classes(model, data)
        return class_statistics(
            torch.cat(feats), torch.cat(labels), k, gamma1=c.gamma1, gamma2=c.gamma2, covariance=c.covariance
        )

    def distances(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """(n, K) ``d_M`` of ``x`` to every class with statistics; ``inf`` for the others."""
        d = mahalanobis(self.features(model, x), self.means_, self.precisions_)
        return d.masked_fill(~self.present_[None, :], float("inf"))

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        assert ctx.original is not None  # requires.original_model, checked before compute
        forget = as_image_dataset(data.forget)
        means, precisions = self.statistics(model, data, ctx)
        # Classes without statistics (the forgotten one) hold zeros, never NaN: a NaN column would turn the
        # gradient of the whole einsum into NaN even though only each sample's target column is used.
        self.present_ = ~torch.isnan(means).any(dim=1)
        self.means_, self.precisions_ = torch.nan_to_num(means).float(), torch.nan_to_num(precisions).float()
        was = model.training
        model.eval()
        with torch.no_grad():
            targets = [
                nearest_wrong_targets(self.distances(model, x), y)
                for x, y in iter_batches(forget, c.batch_size, device=ctx.device)
            ]
        model.train(was)
        self.forget_targets_ = torch.cat(targets).cpu()
        self.forget_batches_ = -(-len(forget) // c.batch_size)
        self.targeted_ = relabelled(forget, self.forget_targets_)
        _, channels, h, w = forget.images.shape
        images = synthetic_surrogates(c.surrogate_size, channels, h, w, ctx.rng)
        self.surrogates_ = ImageDataset(images, torch.zeros(len(images), dtype=torch.long))
        self.teacher_ = ctx.original
        self.forgotten_ = tuple(data.forget_classes)

    def schedule(self) -> Iterable[Phase]:
        # Each forget batch (the partner stream, one pass per epoch) is held for surrogate_ratio surrogate steps.
        every = self.config.surrogate_ratio
        for e in range(self.config.epochs):
            yield Phase(
                f"epoch{e + 1}",
                self.surrogates_,
                steps=self.forget_batches_ * every,
                epoch=e + 1,
                partner="forget",
                partner_data=self.targeted_,
                partner_every=every,
                hold=True,
            )

    def lr_at(self, step: int, total: int, epoch: int) -> float:
        c = self.config
        return multistep_lr(c.lr, epoch, tuple(int(m) for m in c.milestones), c.lr_gamma)

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher logits on surrogates and the rows kept for distillation (class removal: not predicted as a
        forgotten class; that class's logit set to the row's minimum)."""
        t = self.teacher_(x)
        keep = torch.ones(len(x), dtype=torch.bool, device=x.device)
        if self.forgotten_:
            cls = torch.tensor(self.forgotten_, device=x.device)
            keep = ~torch.isin(t.argmax(1), cls)
            t = t.clone()
            t[:, cls] = t.min(dim=1, keepdim=True).values
        return t, keep

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        c = self.config
        xf, tf = batch.forget  # type: ignore[misc]  # the held partner batch: images and their target classes
        xs, _ = batch.mixed  # type: ignore[misc]
        t_logits, keep = self.teacher_logits(xs)
        z = embed(model, torch.cat([xf, xs]))
        zf, zs = z[: len(xf)], z[len(xf) :]
        u = F.normalize(tukey(zf.float(), c.beta), dim=1)
        # All K distances (n·K·d² work, no (n, d, d) gather), then each sample's target column.
        d = mahalanobis(u, self.means_, self.precisions_).gather(1, tf[:, None]).squeeze(1)
        l_f = d.mean()
        s_logits = model.head(zs)  # type: ignore[operator]
        l_d = distill_kl(s_logits[keep], t_logits[keep], c.temperature) if keep.any() else s_logits.sum() * 0
        loss = c.lambda_forget * l_f + c.lambda_distill * l_d
        return StepOutput(loss, {"mahalanobis": l_f.detach(), "distill": l_d.detach()})


__all__ = [
    "Scar",
    "ScarConfig",
    "class_statistics",
    "distill_kl",
    "mahalanobis",
    "shrunk_precision",
    "synthetic_surrogates",
    "tukey",
]
