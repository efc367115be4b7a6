"""Influence Unlearning (IU): one Newton step with a WoodFisher inverse-Hessian-vector product."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple

import torch
from torch import nn

from ..data.loading import as_image_dataset, iter_batches
from ..errors import DivergenceError, IncompatibleError
from . import register
from ._common import gradient_sum, per_sample_grad_chunks, trainable, unflatten_add_
from .base import DEFAULT_COLLAPSE_FLOOR, MethodConfig, RunContext, UnlearnData, retain_accuracy_sample
from .one_shot import OneShotMethod

#: Largest number of stored float64 entries (samples × parameters) the exact WoodFisher may use (~1.6 GB).
EXACT_MAX_ENTRIES = 200_000_000
#: Retain-accuracy drop (points) after which the step counts as diverged (the ascent methods' default).
DEFAULT_MAX_RETAIN_DROP = 5.0


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
        augment_for_statistics: training augmentation while computing gradients. Off by default: our originals
            are trained without augmentation, so the statistics use the clean images they saw (the reference
            augments because its originals were trained with augmentation); True reproduces the reference.
        denominator_floor: guard of the ``reference`` recursion: a sample whose denominator ``N + o·g`` is below
            ``denominator_floor · N`` (near 0 or negative, where the update flips and explodes) is **skipped**
            (its rank-1 correction is not applied) and counted in the log (``ihvp_skipped``). Default 0.1;
            None: the unguarded reference.
        on_divergence: after the step, ``raise`` a `DivergenceError` or ``rollback`` to the input weights (with a
            warning) when the weights are non-finite, retain accuracy (a sample of up to 1,024 retain images)
            fell under ``collapse_floor`` or dropped more than ``max_retain_drop`` points.
        collapse_floor: retain accuracy (percent) counted as a collapse (None: 20, as the ascent methods).
        max_retain_drop: largest allowed drop of retain accuracy in points (None: 5, the default of the ascent
            methods' in-run guard); 100 turns the drop check off.
    """

    alpha: float = 10.0
    ihvp: Literal["reference", "exact_woodfisher"] = "reference"
    num_samples: int = 1000
    damping: float = 1.0
    batch_size: int = 256
    augment_for_statistics: bool = False
    denominator_floor: float | None = 0.1
    on_divergence: Literal["raise", "rollback"] = "raise"
    collapse_floor: float | None = None
    max_retain_drop: float | None = None

    def validate(self) -> None:
        super().validate()
        self.check(
            self.ihvp in ("reference", "exact_woodfisher"),
            f"ihvp must be 'reference' or 'exact_woodfisher', got {self.ihvp!r}",
        )
        self.check(self.num_samples >= 1, f"num_samples must be ≥ 1, got {self.num_samples}")
        self.check(self.damping > 0, f"damping must be > 0, got {self.damping}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(
            self.denominator_floor is None or 0 <= self.denominator_floor < 1,
            f"denominator_floor must be in [0, 1) or None, got {self.denominator_floor}",
        )
        self.check(
            self.on_divergence in ("raise", "rollback"),
            f"on_divergence must be 'raise' or 'rollback', got {self.on_divergence!r}",
        )
        self.check(
            self.collapse_floor is None or 0 <= self.collapse_floor <= 100,
            f"collapse_floor must be a percentage in [0, 100], got {self.collapse_floor}",
        )
        self.check(
            self.max_retain_drop is None or 0 < self.max_retain_drop <= 100,
            f"max_retain_drop must be in (0, 100] percentage points, got {self.max_retain_drop}",
        )


@dataclass
class RecursionStats:
    """What the guarded reference recursion saw: samples used and skipped, the smallest denominator."""

    used: int = 0
    skipped: int = 0
    min_denominator: float = math.inf


def reference_ihvp(
    v: torch.Tensor,
    grads: Iterable[torch.Tensor],
    n: int,
    floor: float | None = None,
    stats: RecursionStats | None = None,
) -> torch.Tensor:
    """The reference ``Wfisher.py`` recursion (methods.md §5 step 5), transcribed exactly, optionally guarded.

    ``grads`` yields per-sample gradient vectors in order; at most ``n + 2`` are used (the reference breaks
    after index ``n + 1``). The direction ``o`` never absorbs new samples, so this is not Sherman–Morrison.
    With ``floor`` set, a sample whose denominator ``n + o·g`` is below ``floor · n`` is skipped (``k`` and ``o``
    unchanged) and counted in ``stats.skipped``; ``floor=None`` is the unguarded reference.
    """
    stats = stats if stats is not None else RecursionStats()
    k = v.clone()
    o: torch.Tensor | None = None
    for idx, g in enumerate(grads):
        g = g.to(v.dtype)
        if o is None:
            o = g.clone()
            stats.used += 1
        else:
            t = torch.dot(o, g)
            denom = n + t
            stats.min_denominator = min(stats.min_denominator, float(denom))
            if floor is not None and not bool(denom >= floor * n):
                stats.skipped += 1
            else:
                k = k - (torch.dot(k, g) / denom) * o
                o = o - (t / denom) * o
                stats.used += 1
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


class _Step(NamedTuple):
    params: Sequence[torch.Tensor]
    backup: list[torch.Tensor]
    before: float
    step: torch.Tensor


@register("iu", aliases=("influence", "wfisher", "woodfisher"))
class InfluenceUnlearning(OneShotMethod[_Step | None]):
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
        augment_for_statistics: training augmentation while computing the gradients (default False).
        denominator_floor: skip recursion samples with ``N + o·g < floor · N`` (default 0.1; None: unguarded).
        on_divergence, collapse_floor, max_retain_drop: the check after the step (retain accuracy on a sample
            must not fall under 20 % or drop by more than 5 points): ``raise`` (default) or ``rollback``.

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

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> _Step | None:
        """The Newton step ``H⁻¹ ∇L_f`` (None when ``alpha`` is 0), with the retain accuracy and weights before it."""
        c = self.config
        model.eval()
        params = [p for _, p in trainable(model)]
        dim = sum(p.numel() for p in params)
        if c.ihvp == "exact_woodfisher" and min(c.num_samples, len(data.retain)) * dim > EXACT_MAX_ENTRIES:  # type: ignore[arg-type]
            raise IncompatibleError(
                f"`iu` with ihvp='exact_woodfisher' would store {c.num_samples} × {dim:,} "
                "gradient entries; lower num_samples or use ihvp='reference'"
            )
        if c.alpha == 0:
            return None
        assert data.retain is not None  # requires.retain, checked above
        before = retain_accuracy_sample(model, data.retain, ctx)
        backup = [p.detach().clone() for p in params]
        v = self.gradient_mismatch(model, data, ctx)
        if c.ihvp == "reference":
            stats = RecursionStats()
            grads = self.retain_gradients(model, data, ctx, c.num_samples + 2)
            step = reference_ihvp(v, grads, c.num_samples, c.denominator_floor, stats)
            ctx.log(ihvp_used=stats.used, ihvp_skipped=stats.skipped, ihvp_min_denominator=stats.min_denominator)
        else:
            step = woodfisher_ihvp(v, self.retain_gradients(model, data, ctx, c.num_samples), c.num_samples, c.damping)
        return _Step(params, backup, before, step)

    def edit(self, model: nn.Module, data: UnlearnData, prepared: _Step | None, ctx: RunContext) -> nn.Module:
        if prepared is None:
            return model
        c = self.config
        params, backup, before, step = prepared
        unflatten_add_(params, step, scale=c.alpha)
        why = self._divergence(model, params, data, ctx, before)
        if why is not None:
            hint = f"`iu` diverged: {why}. Lower alpha, or set on_divergence=rollback to return the input weights."
            if c.on_divergence == "raise":
                raise DivergenceError(hint)
            with torch.no_grad():
                for p, b in zip(params, backup, strict=True):
                    p.copy_(b)
            warnings.warn(hint + " Rolled back to the input weights.", RuntimeWarning, stacklevel=3)
        return model

    def _divergence(
        self, model: nn.Module, params: Sequence[torch.Tensor], data: UnlearnData, ctx: RunContext, before: float
    ) -> str | None:
        """Why the step counts as diverged (non-finite weights, retain collapse or drop), or None."""
        c = self.config
        if not all(bool(torch.isfinite(p).all()) for p in params):
            return "non-finite weights"
        assert data.retain is not None
        after = retain_accuracy_sample(model, data.retain, ctx)
        floor = DEFAULT_COLLAPSE_FLOOR if c.collapse_floor is None else c.collapse_floor
        drop = DEFAULT_MAX_RETAIN_DROP if c.max_retain_drop is None else c.max_retain_drop
        ctx.log(retain_accuracy_before=before, retain_accuracy_after=after)
        if not math.isfinite(after) or after < floor:
            return f"retain accuracy collapsed to {after:.1f}% (floor {floor:g}%)"
        if drop < 100 and after < before - drop:
            return f"retain accuracy fell from {before:.1f}% to {after:.1f}% (more than {drop:g} points)"
        return None
