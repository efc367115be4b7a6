"""Fisher Forgetting (FF): Gaussian noise scaled by the inverse diagonal Fisher of the retain set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data.loading import as_image_dataset, iter_batches
from . import register
from ._common import per_sample_grad_chunks
from .base import MethodConfig, Requirements, RunContext, UnlearnData, infer_num_classes
from .one_shot import OneShotMethod

VAR_CLAMP = 1e3  # var = 1/(F + 1e-8) is clamped to at most this
HEAD_VAR_CLAMP = 1e2  # and to at most this for tensors whose first dimension is K (the head)
FORGOTTEN_ROW_VAR = 1e-4  # variance of a forgotten class's head row (before the ×10 below)
NOISE_BOOST = 10.0  # the reference multiplies the variance of head tensors and 1-d tensors by 10
EPS = 1e-8


@dataclass(frozen=True, kw_only=True)
class FisherConfig(MethodConfig):
    """FF settings (methods.md §4).

    Args:
        alpha: noise scale α (searched in [1e-9, 1e-6]; start at 1e-6 with the per-sample Fisher).
        fisher_batch_size: 1 = per-sample Fisher (Golatkar et al., default); 32 = the batch-level approximation
            of the Unlearn-Sparse/SalUn code, roughly 32× smaller, so it needs a smaller α.
        max_samples: use only the first ``max_samples`` retain images for the Fisher (None: all).
        augment_for_statistics: apply the dataset's training augmentation while computing the Fisher. Off by
            default: the statistics should see the images the original was trained on, and our originals are
            trained without augmentation (the reference codes augment because their originals were trained with
            it, methods.md §0.4); True reproduces the reference for augmented originals.
        reference_parity: reproduce the reference bug that zeroes the *last* class's head row in random mode
            too (methods.md §4 [PARITY]); off by default.
    """

    alpha: float = 1e-6
    fisher_batch_size: int = 1
    max_samples: int | None = None
    augment_for_statistics: bool = False
    reference_parity: bool = False

    def validate(self) -> None:
        super().validate()
        self.check(self.alpha >= 0, f"alpha must be ≥ 0, got {self.alpha}")
        self.check(self.fisher_batch_size >= 1, f"fisher_batch_size must be ≥ 1, got {self.fisher_batch_size}")
        self.check(
            self.max_samples is None or self.max_samples >= 1,
            f"max_samples must be ≥ 1 or None, got {self.max_samples}",
        )


@register("ff", aliases=("fisher", "fisher_forgetting"))
class FisherForgetting(OneShotMethod[tuple[int, dict[str, torch.Tensor]]]):
    """Fisher forgetting: add noise to each weight with variance inversely proportional to its retain Fisher.

    Paper: Golatkar et al., "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks",
    CVPR 2020; as implemented in Unlearn-Sparse / SalUn (``fisher_new``), methods.md §4.

    Nothing is optimised. The diagonal Fisher ``F`` of the retain set uses the model's own predictive
    distribution: ``F = mean_batches Σ_k mean_b(p_k) · (∇ mean_b CE(·, k))²``. Then, per parameter tensor,
    ``var = α · min(1/(F + 1e-8), 1e3)`` (1e2 for head tensors), averaged over input channels for ≥2-d
    tensors, ×10 for head and 1-d tensors, and ``θ = θ_o + sqrt(var) ⊙ N(0, I)``. Class-wise, the forgotten
    class's head row is set to mean 0 with variance 1e-4 (×10).

    Args:
        alpha: α, the noise scale (default 1e-6).
        fisher_batch_size: 1 (per-sample Fisher, default) or the reference's 32.
        max_samples: cap on the retain images used for the Fisher (default None: all).
        augment_for_statistics: training augmentation while computing F (default False: clean images).
        reference_parity: also zero the last class's head row in random mode (default False).

    Requires: the retain set (labels are not used); the split, to know the forgotten class in class-wise mode.
    """

    Config = FisherConfig
    requires = Requirements(retain=True, labels=False)
    summary = "noise scaled by the inverse retain Fisher; zero the forgotten class's head row"
    paper = "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020"
    smoke_config: ClassVar[dict[str, Any]] = {"max_samples": 32}

    # --- step 2: the diagonal Fisher on the retain set ------------------------------------------------
    def fisher_diagonal(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> dict[str, torch.Tensor]:
        c = self.config
        retain = as_image_dataset(data.retain)  # type: ignore[arg-type]
        if c.max_samples is not None:
            retain = retain.subset(range(min(c.max_samples, len(retain))))
        num_classes = infer_num_classes(model, data)
        aug = data.augment if c.augment_for_statistics else None
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        fisher = {n: torch.zeros_like(params[n]) for n in names}
        model.eval()
        n_batches = 0
        per_sample = c.fisher_batch_size == 1
        load = 256 if per_sample else c.fisher_batch_size  # per-sample gradients are vectorised over 256 images
        for x, _ in iter_batches(retain, load, augment=aug, generator=ctx.rng, device=ctx.device):
            n_batches += len(x) if per_sample else 1
            if per_sample:
                self._accumulate_per_sample(model, x, num_classes, names, fisher)
                continue
            logits = model(x)
            prob = F.softmax(logits, dim=1).detach()
            for k in range(num_classes):
                target = torch.full((len(x),), k, dtype=torch.long, device=x.device)
                grads = torch.autograd.grad(
                    F.cross_entropy(logits, target), [params[n] for n in names], retain_graph=k < num_classes - 1
                )
                weight = prob[:, k].mean()
                for n, g in zip(names, grads, strict=False):
                    fisher[n] += weight * g.detach() ** 2
        for n in names:
            fisher[n] /= max(n_batches, 1)
        return fisher

    @staticmethod
    def _accumulate_per_sample(
        model: nn.Module, x: torch.Tensor, num_classes: int, names: list[str], fisher: dict[str, torch.Tensor]
    ) -> None:
        """``F += Σ_i Σ_k p_ik · g_ik²`` for a chunk of single samples (vectorised batch-size-1 passes)."""
        with torch.no_grad():
            prob = F.softmax(model(x), dim=1)
        shapes = [fisher[n].shape for n in names]
        acc = torch.zeros(sum(s.numel() for s in shapes), device=x.device)
        for k in range(num_classes):
            target = torch.full((len(x),), k, dtype=torch.long, device=x.device)
            start = 0
            for g in per_sample_grad_chunks(model, x, target, names):
                acc += (prob[start : start + len(g), k : k + 1] * g**2).sum(0)
                start += len(g)
        offset = 0
        for n, s in zip(names, shapes, strict=False):
            fisher[n] += acc[offset : offset + s.numel()].view(s)
            offset += s.numel()

    # --- step 3: the noise ------------------------------------------------------------------------------
    def noise_variance(
        self,
        name: str,
        p: torch.Tensor,
        fisher: torch.Tensor,
        num_classes: int,
        forget_classes: tuple[int, ...],
        is_head: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) of the Gaussian that replaces parameter ``p`` (methods.md §4 step 3)."""
        var = (1.0 / (fisher + EPS)).clamp(max=VAR_CLAMP)
        if is_head:
            var = var.clamp(max=HEAD_VAR_CLAMP)
        var = self.config.alpha * var
        if p.ndim > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
        mu = p.detach().clone()
        if is_head:
            for cls in forget_classes:
                mu[cls] = 0.0
                var[cls] = FORGOTTEN_ROW_VAR
        if is_head or p.ndim == 1:
            var = var * NOISE_BOOST
        return mu, var

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> tuple[int, dict[str, torch.Tensor]]:
        """The number of classes and the retain Fisher diagonal."""
        num_classes = infer_num_classes(model, data)
        with torch.enable_grad():
            return num_classes, self.fisher_diagonal(model, data, ctx)

    @torch.no_grad()
    def edit(
        self, model: nn.Module, data: UnlearnData, prepared: tuple[int, dict[str, torch.Tensor]], ctx: RunContext
    ) -> nn.Module:
        num_classes, fisher = prepared
        if data.split_kind == "class":
            forget_classes = data.forget_classes
        elif self.config.reference_parity:
            forget_classes = (num_classes - 1,)  # the reference's class_to_replace = -1 indexes the last row
        else:
            forget_classes = ()
        head = getattr(model, "head", None)
        head_ids = {id(q) for q in head.parameters()} if isinstance(head, nn.Module) else None
        for name, p in model.named_parameters():
            if name not in fisher:
                continue
            # The reference treats every tensor whose first dimension is K as the head; where the model names
            # its head we use exactly that (a conv layer with K channels is not a classifier row).
            is_head = p.shape[0] == num_classes and (head_ids is None or id(p) in head_ids)
            mu, var = self.noise_variance(name, p, fisher[name], num_classes, forget_classes, is_head)
            noise = torch.randn(p.shape, generator=ctx.rng).to(p.device)
            p.copy_(mu + var.sqrt() * noise)
        model.eval()
        return model
