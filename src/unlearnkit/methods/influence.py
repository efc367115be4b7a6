"""Influence Unlearning (IU): one Newton step with a WoodFisher inverse-Hessian-vector product."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..data.loading import as_image_dataset, iter_batches
from ..errors import DivergenceError, IncompatibleError
from . import register
from ._common import gradient_sum, per_sample_grad_chunks, trainable, unflatten_add_
from .base import Method, MethodConfig, RunContext, UnlearnData

#: Largest number of stored float64 entries (samples × parameters) the exact WoodFisher may use (~1.6 GB).
EXACT_MAX_ENTRIES = 200_000_000


@dataclass(frozen=True, kw_only=True)
class InfluenceConfig(MethodConfig):
    """IU settings (methods.md §5).

    Args:
        alpha: step size α of ``θ_u = θ_o + α · Ĥ⁻¹v`` (searched in [1, 20]; values below 1 sometimes help).
        ihvp: ``reference`` (default): the recursion of the Unlearn-Sparse ``Wfisher.py`` code, which is not an
            exact Sherman–Morrison update (kept for parity); ``exact_woodfisher``: the exact inverse of
            ``λI + (1/N) Σ_j g_j g_jᵀ`` applied to v (O(N·d) memory: small models or small N only).
        num_samples: N, the number of per-sample retain gradients (default 1000; the reference recursion
            processes N + 2 samples, as the reference loop does).
        damping: λ of the exact WoodFisher (default 1).
        batch_size: batch size of the forget/retain gradient sums (default 256).
        augment_for_statistics: training augmentation while computing gradients (the reference does).
    """

    alpha: float = 10.0
    ihvp: Literal["reference", "exact_woodfisher"] = "reference"
    num_samples: int = 1000
    damping: float = 1.0
    batch_size: int = 256
    augment_for_statistics: bool = True

    def validate(self) -> None:
        super().validate()
        self.check(
            self.ihvp in ("reference", "exact_woodfisher"),
            f"ihvp must be 'reference' or 'exact_woodfisher', got {self.ihvp!r}",
        )
        self.check(self.num_samples >= 1, f"num_samples must be ≥ 1, got {self.num_samples}")
        self.check(self.damping > 0, f"damping must be > 0, got {self.damping}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")


def reference_ihvp(v: torch.Tensor, grads: Iterable[torch.Tensor], n: int) -> torch.Tensor:
    """The reference ``Wfisher.py`` recursion (methods.md §5 step 5), transcribed exactly.

    ``grads`` yields per-sample gradient vectors in order; at most ``n + 2`` are used (the reference breaks
    after index ``n + 1``). The direction ``o`` never absorbs new samples, so this is not Sherman–Morrison.
    """
    k = v.clone()
    o: torch.Tensor | None = None
    for idx, g in enumerate(grads):
        g = g.to(v.dtype)
        if o is None:
            o = g.clone()
        else:
            t = torch.dot(o, g)
            k = k - (torch.dot(k, g) / (n + t)) * o
            o = o - (t / (n + t)) * o
        if idx > n:
            break
    return k


def woodfisher_ihvp(v: torch.Tensor, grads: Iterable[torch.Tensor], n: int, damping: float = 1.0) -> torch.Tensor:
    """``F̂⁻¹ v`` with ``F̂ = λI + (1/n) Σ_j g_j g_jᵀ`` by exact Sherman–Morrison updates (methods.md §5).

    ``F̂_j⁻¹ = F̂_{j−1}⁻¹ − u_j u_jᵀ / (n + g_jᵀ u_j)`` with ``u_j = F̂_{j−1}⁻¹ g_j``; every ``u_j`` is stored
    (O(N·d) memory). Uses the first ``n`` gradients.
    """
    us = torch.zeros(n, v.numel(), dtype=v.dtype, device=v.device)  # row j holds u_j
    denoms = torch.ones(n, dtype=v.dtype, device=v.device)
    m = 0  # rows filled so far

    def apply_inverse(x: torch.Tensor) -> torch.Tensor:
        # F̂_m⁻¹ x = x/λ − Σ_{i<m} u_i (u_iᵀ x) / (n + g_iᵀ u_i), as two matrix-vector products
        return x / damping - us[:m].T @ ((us[:m] @ x) / denoms[:m])

    for g in grads:
        if m >= n:
            break
        g = g.to(v.dtype)
        u = apply_inverse(g)
        us[m] = u
        denoms[m] = n + torch.dot(g, u)
        m += 1
    return apply_inverse(v)


@register("iu", aliases=("influence", "wfisher", "woodfisher"))
class InfluenceUnlearning(Method):
    """Influence unlearning: a first-order influence-function step with a WoodFisher inverse-Hessian product.

    Paper: Koh & Liang, "Understanding Black-box Predictions via Influence Functions", ICML 2017; the
    WoodFisher variant of Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023
    (methods.md §5).

    Nothing is optimised. With ``n = n_f + n_r``, ``S_f = Σ_{D_f} ∇ℓ_i(θ_o)`` and ``S_r = Σ_{D_r} ∇ℓ_j(θ_o)``,
    ``v = S_f / n − S_r · n_f / (n · n_r)`` and ``θ_u = θ_o + α · Ĥ⁻¹ v``, where ``Ĥ⁻¹ v`` comes from per-sample
    gradients of the first N retain samples (network in ``eval()`` mode throughout).

    Args:
        alpha: α, the step size (default 10; searched in [1, 20]).
        ihvp: ``reference`` recursion (default, parity) or ``exact_woodfisher``.
        num_samples: N (default 1000).
        damping: λ of the exact WoodFisher (default 1).
        batch_size: gradient-sum batch size (default 256).
        augment_for_statistics: training augmentation while computing the gradients (default True).

    Requires: the forget and retain sets with labels.
    """

    Config = InfluenceConfig
    summary = "influence-function Newton step with a WoodFisher inverse-Hessian-vector product"
    paper = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023 (IU / WoodFisher)"
    smoke_config: ClassVar[dict[str, Any]] = {"num_samples": 16, "alpha": 1.0}

    def gradient_mismatch(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> torch.Tensor:
        """v = S_f / n − S_r · n_f / (n · n_r) (methods.md §5 steps 2–4), float64."""
        c = self.config
        aug = data.augment if c.augment_for_statistics else None
        n_f, n_r = len(data.forget), len(data.retain)  # type: ignore[arg-type]
        n = n_f + n_r
        s_f = gradient_sum(model, data.forget, c.batch_size, ctx.device, aug, ctx.rng)
        s_r = gradient_sum(model, data.retain, c.batch_size, ctx.device, aug, ctx.rng)  # type: ignore[arg-type]
        return s_f / n - s_r * (n_f / (n * n_r))

    def retain_gradients(
        self, model: nn.Module, data: UnlearnData, ctx: RunContext, count: int
    ) -> Iterator[torch.Tensor]:
        """Per-sample retain gradients (flat, float64) of the first ``count`` retain samples, in dataset order."""
        c = self.config
        aug = data.augment if c.augment_for_statistics else None
        retain = as_image_dataset(data.retain).subset(range(min(count, len(data.retain))))  # type: ignore[arg-type]
        names = [n for n, _ in trainable(model)]
        for x, y in iter_batches(retain, 256, augment=aug, generator=ctx.rng, device=ctx.device):
            for chunk in per_sample_grad_chunks(model, x, y, names):
                yield from chunk.double()

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        c = self.config
        model.to(ctx.device).eval()
        params = [p for _, p in trainable(model)]
        dim = sum(p.numel() for p in params)
        if c.ihvp == "exact_woodfisher" and min(c.num_samples, len(data.retain)) * dim > EXACT_MAX_ENTRIES:  # type: ignore[arg-type]
            raise IncompatibleError(
                f"`iu` with ihvp='exact_woodfisher' would store {c.num_samples} × {dim:,} "
                "gradient entries; lower num_samples or use ihvp='reference'"
            )
        if c.alpha == 0:
            return model
        v = self.gradient_mismatch(model, data, ctx)
        if c.ihvp == "reference":
            step = reference_ihvp(v, self.retain_gradients(model, data, ctx, c.num_samples + 2), c.num_samples)
        else:
            step = woodfisher_ihvp(v, self.retain_gradients(model, data, ctx, c.num_samples), c.num_samples, c.damping)
        unflatten_add_(params, step, scale=c.alpha)
        for p in params:
            if not torch.isfinite(p).all():
                raise DivergenceError("`iu` produced non-finite weights; lower alpha")
        return model
