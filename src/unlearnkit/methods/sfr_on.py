"""SFR-on: saliency forgetting in the remain-preserving manifold, online (methods.md §10)."""

from __future__ import annotations

import collections
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Literal

import torch
import torch.nn.functional as F
from torch import nn

from .. import oracle
from .._io import atomic_write, sha256_json
from ..data.datasets import Augment, ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from ..progress import progress_bar
from . import register
from .base import GradientConfig, GradientMethod, Requirements, RunContext, UnlearnData

#: Bumped whenever the Fisher estimate changes, so stale cache files are never read.
FISHER_VERSION = 1
#: Numerical floor of the adaptive weights and of the Fisher ratio (both 1e-15 in the reference code).
EPS = 1e-15

#: How many Fisher diagonals were computed and how many were read from the cache in this process.
fisher_stats: collections.Counter[str] = collections.Counter()


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
        self.check(self.epochs == 0, f"sfr_on counts iterations, not epochs: set n_iters (remain steps) instead of "
                                     f"epochs={self.epochs}")
        self.check(self.n_iters >= 1, f"n_iters must be ≥ 1, got {self.n_iters}")
        self.check(self.forget_freq >= 1, f"forget_freq must be ≥ 1 (a forget step every k-th iteration), "
                                          f"got {self.forget_freq}")
        self.check(self.alpha0 >= 0 and math.isfinite(self.alpha0), f"alpha0 must be a finite number ≥ 0, "
                                                                     f"got {self.alpha0}")
        self.check(self.lam >= 0 and math.isfinite(self.lam), f"lam (temperature λ) must be a finite number ≥ 0, "
                                                               f"got {self.lam}")
        self.check(self.gamma >= 0 and not math.isnan(self.gamma), f"gamma (mask threshold γ) must be ≥ 0 "
                                                                    f"(inf empties the mask), got {self.gamma}")
        self.check(self.max_norm is None or (self.max_norm > 0 and math.isfinite(self.max_norm)),
                   f"max_norm must be a finite number > 0 or None (no clipping), got {self.max_norm}")
        self.check(0 < self.slow_weight_beta <= 1, f"slow_weight_beta must be in (0, 1] (1 disables the "
                                                   f"interpolation), got {self.slow_weight_beta}")


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


def batch_fisher(model: nn.Module, data: ImageDataset, batch_size: int, *, generator: torch.Generator,
                 augment: Augment | None, device: torch.device) -> dict[str, torch.Tensor]:
    """Mean over batches of the squared gradient of the batch-mean CE, per named parameter (eval mode).

    A batch-level empirical Fisher diagonal as in the reference code, not a per-sample one.
    """
    was = model.training
    model.eval()
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    n_batches = 0
    for x, y in iter_batches(data, batch_size, shuffle=True, generator=generator, augment=augment, device=device):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        for n, p in params.items():
            if p.grad is not None:
                acc[n] += p.grad.detach().float() ** 2
        n_batches += 1
    model.zero_grad(set_to_none=True)
    model.train(was)
    fisher_stats["computed"] += 1
    return {n: (a / max(n_batches, 1)).cpu() for n, a in acc.items()}


def saliency_mask(forget_fisher: dict[str, torch.Tensor], retain_fisher: dict[str, torch.Tensor],
                  gamma: float) -> dict[str, torch.Tensor]:
    """Binary mask 1[(F_f + 1e-15) / (F_r + 1e-15) ≥ γ]: weights more important to forget than to retain."""
    return {n: ((forget_fisher[n] + EPS) / (retain_fisher[n] + EPS) >= gamma).float() for n in forget_fisher}


def _tensor_digest(h: Any, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """SHA-256 of the whole state dict (parameters and BatchNorm buffers): the Fisher depends on both."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _tensor_digest(h, t)
    return h.hexdigest()


def data_digest(*datasets: ImageDataset) -> str:
    """SHA-256 of the images and labels of the given sets (the forget/retain split in effect)."""
    h = hashlib.sha256()
    for ds in datasets:
        _tensor_digest(h, ds.images)
        _tensor_digest(h, ds.targets)
    return h.hexdigest()


def fisher_cache_path(key: str) -> Path:
    return oracle.cache_dir() / "fisher" / key[:2] / f"{key}.safetensors"


def _load_fishers(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - a damaged cache file is recomputed, whatever the error type
        warnings.warn(f"ignoring unreadable Fisher cache file {path.name} ({type(exc).__name__}); recomputing it",
                      RuntimeWarning, stacklevel=3)
        return None
    forget = {k[len("forget/"):]: v for k, v in tensors.items() if k.startswith("forget/")}
    retain = {k[len("retain/"):]: v for k, v in tensors.items() if k.startswith("retain/")}
    return forget, retain


def _save_fishers(path: Path, forget: dict[str, torch.Tensor], retain: dict[str, torch.Tensor],
                  meta: dict[str, str]) -> None:
    from safetensors.torch import save_file

    state = {f"forget/{n}": t.contiguous() for n, t in forget.items()}
    state.update({f"retain/{n}": t.contiguous() for n, t in retain.items()})
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def _cycle(ds: ImageDataset, batch_size: int, generator: torch.Generator, augment: Augment | None,
           device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches, reshuffled on every pass (the reference code's ``cycle`` over a loader)."""
    while True:
        yield from iter_batches(ds, batch_size, shuffle=True, generator=generator, augment=augment, device=device)


def _clip_(grads: list[torch.Tensor], max_norm: float) -> None:
    """Scale ``grads`` in place to total L2 norm ≤ ``max_norm`` (as ``clip_grad_norm_`` does)."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)


class _NonFiniteLoss(Exception):
    pass


def _nonfinite_parameter(model: nn.Module) -> str | None:
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()), None)
    return f"parameter {bad!r} holds non-finite values" if bad else None


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

    Config: ClassVar[type[SFRonConfig]] = SFRonConfig  # type: ignore[assignment]
    requires: ClassVar[Requirements] = Requirements(retain=True, labels=True)
    paper: ClassVar[str | None] = ("Unified Gradient-Based Machine Unlearning with Remain Geometry Enhancement "
                                   "(NeurIPS 2024), https://arxiv.org/abs/2409.19732")
    summary: ClassVar[str] = "masked adaptive gradient ascent on forget, interleaved with retain descent (fast–slow)"
    guard_divergence: ClassVar[bool] = True
    smoke_config: ClassVar[dict[str, Any]] = {"n_iters": 6, "forget_freq": 2, "batch_size": 16, "fisher_cache": False}

    # --- setup: Fishers and mask ------------------------------------------------------------------
    def fishers(self, model: nn.Module, forget: ImageDataset, retain: ImageDataset, data: UnlearnData,
                ctx: RunContext) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Forget and retain Fisher diagonals at the current (original) weights, from the cache when present."""
        c = self.config
        use_aug = c.augment if c.fisher_augment is None else c.fisher_augment
        aug = data.augment if use_aug else None
        key: str | None = None
        path: Path | None = None
        if c.fisher_cache:
            key = sha256_json({"version": FISHER_VERSION, "model": model_digest(model),
                               "data": data_digest(forget, retain), "batch_size": c.batch_size, "augment": aug,
                               "seed": ctx.seed})
            path = fisher_cache_path(key)
        if path is not None and path.is_file():
            loaded = _load_fishers(path)
            names = {n for n, p in model.named_parameters() if p.requires_grad}
            if loaded is not None and set(loaded[0]) == names and set(loaded[1]) == names:
                fisher_stats["loaded"] += 1
                return loaded
        # A generator of its own, so a cached and a fresh run consume ctx.rng identically.
        gen = torch.Generator().manual_seed(ctx.seed)
        f_f = batch_fisher(model, forget, c.batch_size, generator=gen, augment=aug, device=ctx.device)
        f_r = batch_fisher(model, retain, c.batch_size, generator=gen, augment=aug, device=ctx.device)
        if path is not None and key is not None:
            _save_fishers(path, f_f, f_r, {"key": key, "n_forget": str(len(forget)), "n_retain": str(len(retain))})
        return f_f, f_r

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

    def forget_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], alpha: float,
                    optimizer: torch.optim.Optimizer) -> float:
        """Fast step: descend −α_t F, masked, then clipped (forget step only)."""
        f = self.forget_loss(model, *batch)
        if not torch.isfinite(f.detach()):
            raise _NonFiniteLoss(f"non-finite forget loss {float(f.detach())}")
        optimizer.zero_grad(set_to_none=True)
        (-alpha * f).backward()
        self._mask_grads(model)
        if self.config.max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], self.config.max_norm)
        optimizer.step()
        return float(f.detach())

    def remain_step(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                    optimizer: torch.optim.Optimizer) -> float:
        """Slow step: plain CE descent on a retain batch, every weight, no clipping."""
        loss = F.cross_entropy(model(batch[0]), batch[1])
        if not torch.isfinite(loss.detach()):
            raise _NonFiniteLoss(f"non-finite retain loss {float(loss.detach())}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    def joint_step(self, model: nn.Module, fbatch: tuple[torch.Tensor, torch.Tensor] | None,
                   rbatch: tuple[torch.Tensor, torch.Tensor], alpha: float,
                   optimizer: torch.optim.Optimizer) -> tuple[float, float]:
        """Ablation without interleave: one step on L_r − α_t F; mask and clip touch the forget gradient only."""
        params = [p for p in model.parameters() if p.requires_grad]
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        f_val = math.nan
        grads = [torch.zeros_like(p) for p in params]
        if fbatch is not None:
            f = self.forget_loss(model, *fbatch)
            if not torch.isfinite(f.detach()):
                raise _NonFiniteLoss(f"non-finite forget loss {float(f.detach())}")
            gf = torch.autograd.grad(-alpha * f, params, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(gf, params)]
            if self.mask_ is not None:
                grads = [g * self.mask_[n] for g, n in zip(grads, names)]
            if self.config.max_norm is not None:
                _clip_(grads, self.config.max_norm)
            f_val = float(f.detach())
        loss = F.cross_entropy(model(rbatch[0]), rbatch[1])
        if not torch.isfinite(loss.detach()):
            raise _NonFiniteLoss(f"non-finite retain loss {float(loss.detach())}")
        gr = torch.autograd.grad(loss, params, allow_unused=True)
        optimizer.zero_grad(set_to_none=True)
        for p, g, r in zip(params, grads, gr):
            p.grad = g if r is None else g + r
        optimizer.step()
        return f_val, float(loss.detach())

    # --- the loop ---------------------------------------------------------------------------------
    def total_steps(self, data: UnlearnData) -> int:
        c = self.config
        return min(c.n_iters, c.max_steps) if c.max_steps is not None else c.n_iters

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        c = self.config
        model.to(ctx.device)
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)  # type: ignore[arg-type]
        try:
            self.mask_: dict[str, torch.Tensor] | None = None
            mask_fraction = 1.0
            if c.use_mask:
                f_f, f_r = self.fishers(model, forget, retain, data, ctx)
                self.mask_ = {n: m.to(ctx.device) for n, m in saliency_mask(f_f, f_r, c.gamma).items()}
                total = sum(m.numel() for m in self.mask_.values())
                mask_fraction = sum(float(m.sum()) for m in self.mask_.values()) / max(total, 1)
            optimizer = self.make_optimizer(model)
            aug = data.augment if c.augment else None
            it_f = _cycle(forget, c.batch_size, ctx.rng, aug, ctx.device)
            it_r = _cycle(retain, c.batch_size, ctx.rng, aug, ctx.device)
            prev = ([p.detach().clone() for p in model.parameters()] if c.slow_weight_beta < 1 else None)
            with progress_bar(self.name or type(self).__name__, self.total_steps(data), ctx.progress) as bar:
                for t in range(c.n_iters):
                    if (c.max_steps is not None and t >= c.max_steps) or ctx.should_stop():
                        break
                    lr = self.lr_at(t, c.n_iters)  # CosineAnnealingLR(T_max=n_iters), stepped per iteration
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    model.train()
                    is_forget = t % c.forget_freq == 0
                    alpha = alpha_at(t, c.n_iters, c.alpha0, c.decay_alpha) if is_forget else 0.0
                    if c.interleave:
                        f_loss = self.forget_step(model, next(it_f), alpha, optimizer) if is_forget else math.nan
                        r_loss = self.remain_step(model, next(it_r), optimizer)
                    else:
                        f_loss, r_loss = self.joint_step(model, next(it_f) if is_forget else None, next(it_r), alpha,
                                                         optimizer)
                    if prev is not None:
                        with torch.no_grad():
                            for p, q in zip(model.parameters(), prev):
                                p.mul_(c.slow_weight_beta).add_(q, alpha=1 - c.slow_weight_beta)
                                q.copy_(p)
                    ctx.steps += 1
                    logs = {"forget_loss": f_loss} if is_forget else {}  # no NaN placeholders in the history
                    ctx.log(step=t + 1, loss=r_loss, retain_loss=r_loss, forget_step=float(is_forget), alpha=alpha,
                            lr=lr, mask_fraction=mask_fraction, **logs)
                    bar.advance()
            model.eval()
            why = _nonfinite_parameter(model) or self._collapse_reason(model, data, ctx)
            if why:
                self._diverged(model, backup, why)
        except _NonFiniteLoss as exc:
            self._diverged(model, backup, f"{exc} at iteration {ctx.steps}")
        finally:
            self.teardown(ctx)
        model.eval()
        return model


__all__ = ["SFRon", "SFRonConfig", "alpha_at", "batch_fisher", "fisher_stats", "forget_weights", "saliency_mask"]
