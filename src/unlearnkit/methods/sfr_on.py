"""SFR-on: saliency forgetting in the remain-preserving manifold, online (methods.md §10)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..cache import dataset_digest, model_sha256
from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset
from . import register
from ._saliency import fisher_diagonal
from .base import Batch, GradientConfig, GradientMethod, Phase, Requirements, RunContext, StepOutput, UnlearnData

#: Bumped whenever the Fisher estimate changes, so stale cache files are never read.
FISHER_VERSION = 1
#: Numerical floor of the adaptive weights and of the Fisher ratio (both 1e-15 in the reference code).
EPS = 1e-15


@dataclass(frozen=True, kw_only=True)
class SFRonConfig(GradientConfig):
    """Hyper-parameters of `SFRon`; defaults are the official CIFAR-10 random-10 % block (methods.md §10.8)."""

    epochs: int = 0
    lr: float = 0.01
    schedule: Literal["constant", "cosine"] = "cosine"
    n_iters: int = 1500
    forget_freq: int = 5
    alpha0: float = 25.0
    decay_alpha: bool = True
    lam: float = 0.5
    use_mask: bool = True
    gamma: float = 1.0
    max_norm: float | None = 7.0
    interleave: bool = True
    slow_weight_beta: float = 1.0
    fisher_cache: bool = True
    fisher_augment: bool | None = None

    def validate(self) -> None:
        super().validate()
        self.check(
            self.epochs == 0,
            f"sfr_on counts iterations, not epochs: set n_iters (remain steps) instead of epochs={self.epochs}",
        )
        self.check(self.n_iters >= 1, f"n_iters must be ≥ 1, got {self.n_iters}")
        self.check(
            self.forget_freq >= 1,
            f"forget_freq must be ≥ 1 (a forget step every k-th iteration), got {self.forget_freq}",
        )
        self.check(
            self.alpha0 >= 0 and math.isfinite(self.alpha0), f"alpha0 must be a finite number ≥ 0, got {self.alpha0}"
        )
        self.check(
            self.lam >= 0 and math.isfinite(self.lam),
            f"lam (temperature λ) must be a finite number ≥ 0, got {self.lam}",
        )
        self.check(
            self.gamma >= 0 and not math.isnan(self.gamma),
            f"gamma (mask threshold γ) must be ≥ 0 (inf empties the mask), got {self.gamma}",
        )
        self.check(
            self.max_norm is None or (self.max_norm > 0 and math.isfinite(self.max_norm)),
            f"max_norm must be a finite number > 0 or None (no clipping), got {self.max_norm}",
        )
        self.check(
            0 < self.slow_weight_beta <= 1,
            f"slow_weight_beta must be in (0, 1] (1 disables the interpolation), got {self.slow_weight_beta}",
        )


# ------------------------------------------------------------------------------------------ the pieces
def forget_weights(losses: torch.Tensor, lam: float) -> torch.Tensor:
    """Adaptive per-sample forgetting weights, detached and scaled to mean 1 (methods.md §10.5).

    ``w_i ∝ 1 / (ℓ_i^λ + 1e-15)``: low-loss samples (not yet forgotten) get more ascent; λ = 0 gives equal
    weights, i.e. plain gradient ascent. ``mean(w ⊙ ℓ)`` equals the paper's ``Σ_i w̃_i ℓ_i`` with ``Σ w̃ = 1``.
    """
    c = 1.0 / (losses.detach().pow(lam) + EPS)
    return c * (len(c) / c.sum())


def alpha_at(step: int, n_iters: int, alpha0: float, decay: bool = True) -> float:
    """Forget coefficient α_t = α_0 · (1 + cos(π t / n_iters)) / 2 (constant α_0 when ``decay`` is off)."""
    if not decay:
        return alpha0
    return alpha0 * (1 + math.cos(math.pi * step / n_iters)) / 2


def saliency_mask(
    forget_fisher: dict[str, torch.Tensor], retain_fisher: dict[str, torch.Tensor], gamma: float
) -> dict[str, torch.Tensor]:
    """Binary mask 1[(F_f + 1e-15) / (F_r + 1e-15) ≥ γ]: weights more important to forget than to retain."""
    return {n: ((forget_fisher[n] + EPS) / (retain_fisher[n] + EPS) >= gamma).float() for n in forget_fisher}


def _clip_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place to total L2 norm ≤ ``max_norm`` (as ``clip_grad_norm_`` does)."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)


# ------------------------------------------------------------------------------------------ the method
@register("sfr_on", aliases=("sfron",))
class SFRon(GradientMethod):
    """SFR-on: masked, adaptively weighted gradient ascent on the forget set, interleaved with retain descent.

    Paper:
        Huang et al., "Unified Gradient-Based Machine Unlearning with Remain Geometry Enhancement",
        NeurIPS 2024, https://arxiv.org/abs/2409.19732 (code: K1nght/Unified-Unlearning-w-Remain-Geometry).

    Every ``forget_freq``-th iteration takes a *fast* step that ascends the weighted forget loss
    ``α_t · mean_i(w_i ℓ_i)`` (weights ``w_i ∝ ℓ_i^{-λ}``, detached, mean 1), with the gradient restricted by a
    static saliency mask ``M = 1[F_f / F_r ≥ γ]`` (batch-level Fisher diagonals of the forget and retain sets at
    the original weights) and clipped to ``max_norm``. Every iteration then takes an unmasked, unclipped *slow*
    descent step on a retain batch at the new point, which implicitly preconditions the forget step with the
    current retain Hessian. One SGD optimizer (and its momentum) serves both steps; the learning rate follows a
    per-iteration cosine over ``n_iters`` and α_t a cosine from ``α_0`` to 0. BatchNorm runs in train mode for
    both steps and in eval mode for the Fishers. The Fishers are cached on disk, keyed by the model and the
    data, and reused across runs (e.g. a γ sweep).

    Args:
        n_iters: number of iterations = retain (slow) steps, ``n_iters`` in the code (default 1500).
        forget_freq: k, a forget (fast) step at iterations 0, k, 2k, … (default 5).
        alpha0: α_0, the initial forget coefficient (default 25).
        decay_alpha: cosine-decay α_t to 0 over ``n_iters`` (default True, always on in the code).
        lam: λ, temperature of the adaptive forget weights; 0 gives plain gradient ascent (default 0.5).
        use_mask: restrict the forget step to salient weights (default True; False is the no-mask ablation).
        gamma: γ, the Fisher-ratio threshold of the mask, 1 in the paper; ``inf`` masks every weight.
        max_norm: gradient-norm clip of the forget step only (default 7.0; None disables it).
        interleave: fast–slow steps (default True). False is the joint ablation: one optimizer step per
            iteration on ``L_r − α_t F`` with mask and clip applied to the forget part only (no implicit Hessian).
        slow_weight_beta: β of the slow-weight interpolation ``θ ← β θ_new + (1 − β) θ_prev`` after each
            iteration (default 1.0 = off, as in the code).
        fisher_cache: read and write the Fisher diagonals under ``cache_dir()/fisher`` (default True).
        fisher_augment: augment the Fisher batches (None: same as ``augment``).
        lr, optimizer, momentum, weight_decay, batch_size, schedule: the shared optimizer and its cosine schedule
            (defaults SGD 0.01, momentum 0.9, weight decay 5e-4, batch 128, cosine).
        augment: training augmentation on forget and retain batches. Deviation from the reference code (which
            has it on): off by default, the library convention for originals trained without augmentation; the
            CIFAR-10 and TinyImageNet presets turn it on.
        max_steps: stop after this many iterations (the schedules still span ``n_iters``).
        epochs: unused (must stay 0); the budget is ``n_iters``.

    Requires:
        a retain set and labels; random or class-wise forgetting.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import RunContext, create_method
        >>> method = create_method("sfr_on", n_iters=6, forget_freq=2, batch_size=16, fisher_cache=False)
        >>> ctx = RunContext.local("cpu", seed=0)
        >>> model = method.unlearn(tiny_model(trained=True), tiny_data(), ctx)
        >>> [int(h["forget_step"]) for h in ctx.history]
        [1, 0, 1, 0, 1, 0]
    """

    Config: ClassVar[type[SFRonConfig]] = SFRonConfig
    requires: ClassVar[Requirements] = Requirements(retain=True, labels=True)
    paper: ClassVar[str | None] = (
        "Unified Gradient-Based Machine Unlearning with Remain Geometry Enhancement "
        "(NeurIPS 2024), https://arxiv.org/abs/2409.19732"
    )
    summary: ClassVar[str] = "masked adaptive gradient ascent on forget, interleaved with retain descent (fast–slow)"
    guard_divergence: ClassVar[bool] = True
    smoke_config: ClassVar[dict[str, Any]] = {"n_iters": 6, "forget_freq": 2, "batch_size": 16, "fisher_cache": False}

    # --- setup: Fishers and mask ------------------------------------------------------------------
    def fishers(
        self, model: nn.Module, forget: ImageDataset, retain: ImageDataset, data: UnlearnData, ctx: RunContext
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forget and retain Fisher diagonals at the current (original) weights, from the cache when present."""
        c = self.config
        use_aug = c.augment if c.fisher_augment is None else c.fisher_augment
        aug = data.augment if use_aug else None
        cache = ctx.cache("fisher", version=FISHER_VERSION) if c.fisher_cache else None
        key = None
        if cache is not None:
            key = cache.key(
                model=model_sha256(model),
                forget=dataset_digest(forget),
                retain=dataset_digest(retain),
                batch_size=c.batch_size,
                augment=aug,
                seed=ctx.seed,
            )
            loaded = cache.load(key)
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            if loaded is not None and {k.partition("/")[2] for k in loaded} == names:
                return (
                    {k[7:]: v for k, v in loaded.items() if k.startswith("forget/")},
                    {k[7:]: v for k, v in loaded.items() if k.startswith("retain/")},
                )
        # A generator of its own, so a cached and a fresh run consume ctx.rng identically.
        gen = torch.Generator().manual_seed(ctx.seed)
        kw: dict[str, Any] = {
            "batch_size": c.batch_size,
            "device": ctx.device,
            "augment": aug,
            "generator": gen,
            "shuffle": True,
        }
        f_f, f_r = fisher_diagonal(model, forget, **kw), fisher_diagonal(model, retain, **kw)
        if cache is not None and key is not None:
            cache.save(
                key,
                {**{f"forget/{n}": t for n, t in f_f.items()}, **{f"retain/{n}": t for n, t in f_r.items()}},
                {"n_forget": str(len(forget)), "n_retain": str(len(retain))},
            )
        return f_f, f_r

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        c = self.config
        self.mask_: dict[str, torch.Tensor] | None = None
        self.mask_fraction_ = 1.0
        if c.use_mask:
            forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)  # type: ignore[arg-type]
            f_f, f_r = self.fishers(model, forget, retain, data, ctx)
            self.mask_ = {n: m.to(ctx.device) for n, m in saliency_mask(f_f, f_r, c.gamma).items()}
            total = sum(m.numel() for m in self.mask_.values())
            self.mask_fraction_ = sum(float(m.sum()) for m in self.mask_.values()) / max(total, 1)
        self.t_ = 0
        self.prev_ = [p.detach().clone() for p in model.parameters()] if c.slow_weight_beta < 1 else None

    def schedule(self) -> Iterable[Phase]:
        c = self.config
        yield Phase("fast_slow", "interleaved", steps=c.n_iters, forget_every=c.forget_freq)

    def lr_at(self, step: int, total: int, epoch: int) -> float:
        # CosineAnnealingLR(T_max=n_iters), stepped per iteration: the schedule spans n_iters even under max_steps.
        return super().lr_at(step, self.config.n_iters, epoch)

    # --- the two steps ----------------------------------------------------------------------------
    def forget_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """F = mean_i(w_i ℓ_i) with detached adaptive weights (the quantity to ascend)."""
        losses = F.cross_entropy(model(x), y, reduction="none")
        return (forget_weights(losses, self.config.lam) * losses).mean()

    def _mask_grads(self, model: nn.Module) -> None:
        if self.mask_ is None:
            return
        for n, p in model.named_parameters():
            if p.grad is not None:
                p.grad.mul_(self.mask_[n])

    def forget_step(
        self,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        alpha: float,
        optimizer: torch.optim.Optimizer,
        ctx: RunContext,
    ) -> torch.Tensor:
        """Fast step: descend −α_t F, masked, then clipped (forget step only)."""
        with ctx.autocast():
            f = self.forget_loss(model, *batch)
        ctx.check_finite(f, "forget loss")
        optimizer.zero_grad(set_to_none=True)
        (-alpha * f).backward()
        self._mask_grads(model)
        if self.config.max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], self.config.max_norm)
        optimizer.step()
        return f.detach()

    def remain_step(
        self,
        model: nn.Module,
        batch: tuple[torch.Tensor, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        ctx: RunContext,
    ) -> torch.Tensor:
        """Slow step: plain CE descent on a retain batch, every weight, no clipping."""
        with ctx.autocast():
            loss = F.cross_entropy(model(batch[0]), batch[1])
        ctx.check_finite(loss, "retain loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def joint_step(
        self,
        model: nn.Module,
        fbatch: tuple[torch.Tensor, torch.Tensor] | None,
        rbatch: tuple[torch.Tensor, torch.Tensor],
        alpha: float,
        optimizer: torch.optim.Optimizer,
        ctx: RunContext,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Ablation without interleave: one step on L_r − α_t F; mask and clip touch the forget gradient only."""
        params = [p for p in model.parameters() if p.requires_grad]
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        f_val = None
        grads = [torch.zeros_like(p) for p in params]
        if fbatch is not None:
            f = self.forget_loss(model, *fbatch)
            ctx.check_finite(f, "forget loss")
            gf: Sequence[torch.Tensor | None] = torch.autograd.grad(-alpha * f, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(gf, params, strict=True)]
            if self.mask_ is not None:
                grads = [g * self.mask_[n] for g, n in zip(grads, names, strict=True)]
            if self.config.max_norm is not None:
                _clip_(grads, self.config.max_norm)
            f_val = f.detach()
        loss = F.cross_entropy(model(rbatch[0]), rbatch[1])
        ctx.check_finite(loss, "retain loss")
        gr: Sequence[torch.Tensor | None] = torch.autograd.grad(loss, params, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for p, g, r in zip(params, grads, gr, strict=True):
            p.grad = g if r is None else g + r
        optimizer.step()
        return f_val, loss.detach()

    # --- one iteration of the shared loop: a fast step every forget_every-th iteration, then a slow step ---
    def training_step(
        self, model: nn.Module, batch: Batch, phase: Phase, optimizer: torch.optim.Optimizer, ctx: RunContext
    ) -> StepOutput:
        c = self.config
        is_forget = batch.forget is not None
        alpha = alpha_at(self.t_, c.n_iters, c.alpha0, c.decay_alpha) if is_forget else 0.0
        if c.interleave:
            f_loss = self.forget_step(model, batch.forget, alpha, optimizer, ctx) if is_forget else None  # type: ignore[arg-type]
            r_loss = self.remain_step(model, batch.retain, optimizer, ctx)  # type: ignore[arg-type]
        else:
            f_loss, r_loss = self.joint_step(model, batch.forget, batch.retain, alpha, optimizer, ctx)  # type: ignore[arg-type]
        if self.prev_ is not None:
            with torch.no_grad():
                for p, q in zip(model.parameters(), self.prev_, strict=True):
                    p.mul_(c.slow_weight_beta).add_(q, alpha=1 - c.slow_weight_beta)
                    q.copy_(p)
        self.t_ += 1
        logs: dict[str, float | torch.Tensor] = {
            "retain_loss": r_loss,
            "forget_step": float(is_forget),
            "alpha": alpha,
            "lr": optimizer.param_groups[0]["lr"],
            "mask_fraction": self.mask_fraction_,
        }
        if f_loss is not None:  # no NaN placeholders in the history
            logs["forget_loss"] = f_loss
        return StepOutput(r_loss, logs)


__all__ = ["SFRon", "SFRonConfig", "alpha_at", "forget_weights", "saliency_mask"]
