"""Boundary Unlearning: Boundary Shrink (relabel to the nearest wrong class) and Boundary Expanding (shadow class)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..training import make_optimizer
from . import register
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

_PAPER = (
    "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision Space (CVPR 2023), "
    "https://arxiv.org/abs/2303.11570"
)


# ------------------------------------------------------------------------------------------------ attack
def adversarial_examples(
    probe: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epsilon: float,
    attack: Literal["fgsm", "pgd"] = "fgsm",
    steps: int = 10,
    step_size: float | None = None,
    quantize: bool = True,
) -> torch.Tensor:
    """Untargeted L∞ attack on ``CE(probe(x), y)`` in [0, 1] pixel space (the model normalises internally).

    ``fgsm``: ``x + ε · sign(∇_x CE)``. ``pgd``: ``steps`` signed steps of ``step_size`` (default ε/4),
    each projected onto the ε-ball around ``x``. The result is clamped to [0, 1] and, with ``quantize``,
    rounded to multiples of 1/255 (a valid 8-bit image), as the SalUn port does.
    """
    was = probe.training
    probe.eval()
    x = x.detach()
    alpha = epsilon if attack == "fgsm" else (step_size if step_size is not None else epsilon / 4)
    n_steps = 1 if attack == "fgsm" else steps
    x_adv = x.clone()
    try:
        for _ in range(n_steps):
            x_adv.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(probe(x_adv), y, reduction="sum")
                (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = x_adv.detach() + alpha * grad.sign()
            x_adv = torch.min(torch.max(x_adv, x - epsilon), x + epsilon).clamp(0.0, 1.0)
    finally:
        probe.train(was)
    if quantize:
        x_adv = torch.round(x_adv * 255.0) / 255.0
    return x_adv.detach()


@torch.no_grad()
def neighbour_labels(probe: nn.Module, x: torch.Tensor, y: torch.Tensor, **attack: Any) -> torch.Tensor:
    """The class the attack reaches from each ``x``: ``argmax probe(x_adv)`` (equals ``y`` when the attack fails)."""
    x_adv = adversarial_examples(probe, x, y, **attack)
    was = probe.training
    probe.eval()
    out = probe(x_adv).argmax(1)
    probe.train(was)
    return out


def _head(model: nn.Module) -> tuple[str, nn.Linear]:
    """The classification layer: ``model.head`` when it is a Linear, else the last Linear module."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return "head", head
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"{type(model).__name__} has no nn.Linear classification layer; boundary_expand needs one")
    return linears[-1]


# ------------------------------------------------------------------------------------------------ shrink
@dataclass(frozen=True, kw_only=True)
class BoundaryShrinkConfig(GradientConfig):
    """Hyper-parameters of `BoundaryShrink` (defaults: the original code)."""

    epochs: int = 10
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    epsilon: float = 0.1
    attack: Literal["fgsm", "pgd"] = "fgsm"
    pgd_steps: int = 10
    pgd_step_size: float | None = None
    quantize: bool = True

    def validate(self) -> None:
        super().validate()
        self.check(self.epsilon > 0, f"epsilon must be > 0, got {self.epsilon}")
        self.check(self.attack in ("fgsm", "pgd"), f"attack must be 'fgsm' or 'pgd', got {self.attack!r}")
        self.check(self.pgd_steps >= 1, f"pgd_steps must be ≥ 1, got {self.pgd_steps}")
        self.check(
            self.pgd_step_size is None or self.pgd_step_size > 0,
            f"pgd_step_size must be > 0 (or None for ε/4), got {self.pgd_step_size}",
        )


@register("boundary_shrink", aliases=("bs",))
class BoundaryShrink(GradientMethod):
    """Boundary Shrink: fine-tune forget samples towards the nearest wrong class found by an attack.

    Paper:
        Chen et al., "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision
        Space", CVPR 2023, https://arxiv.org/abs/2303.11570

    For every forget batch, an untargeted attack (FGSM with step ε, or PGD) on a frozen copy of ``θ_o``
    finds the neighbouring class ``y_nbr = argmax f_θo(x_adv)``; the model (train mode) then minimises
    ``CE(f_θ(x), y_nbr)`` on the *clean* images. No retain data is used. The fraction of samples with
    ``y_nbr ≠ y`` is logged as ``attack_success``.

    Args:
        epsilon: ε, the L∞ attack budget in [0, 1] pixels (0.1).
        attack: ``fgsm`` (the paper) or ``pgd`` (``pgd_steps`` steps of ``pgd_step_size``, default ε/4).
        quantize: round adversarial images to multiples of 1/255.
        epochs, lr, momentum, weight_decay, batch_size: SGD fine-tuning on D_f (10, 1e-5, 0.9, 0, 128).

    Requires:
        class-wise forgetting and forget labels; no retain set.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data("class:1")
        >>> m = unlearnkit.create_method("boundary_shrink", epochs=1)
        >>> m.unlearn(tiny_model(trained=True), d).head.out_features
        4
    """

    Config: ClassVar[type[BoundaryShrinkConfig]] = BoundaryShrinkConfig
    requires: ClassVar[Requirements] = Requirements(retain=False, split_kinds=frozenset({"class"}))
    paper: ClassVar[str | None] = _PAPER
    summary: ClassVar[str] = "fine-tune D_f on the nearest wrong class found by an FGSM attack (class-wise)"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        self.probe_ = ctx.original if ctx.original is not None else frozen_copy(model)

    def schedule(self) -> Iterable[Phase]:
        yield Phase("shrink", "forget", self.config.epochs)

    def attack_kwargs(self) -> dict[str, Any]:
        c = self.config
        return {
            "epsilon": c.epsilon,
            "attack": c.attack,
            "steps": c.pgd_steps,
            "step_size": c.pgd_step_size,
            "quantize": c.quantize,
        }

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        x, y = batch.forget  # type: ignore[misc]
        y_nbr = neighbour_labels(self.probe_, x, y, **self.attack_kwargs())
        loss = F.cross_entropy(model(x), y_nbr)
        return StepOutput(loss, {"attack_success": (y_nbr != y).float().mean()})


# ------------------------------------------------------------------------------------------------ expand
@dataclass(frozen=True, kw_only=True)
class BoundaryExpandConfig(GradientConfig):
    """Hyper-parameters of `BoundaryExpand` (defaults: the original code)."""

    epochs: int = 10
    lr: float = 1e-5
    momentum: float = 0.9
    weight_decay: float = 0.0
    reference_parity: bool = False


@register("boundary_expand", aliases=("be",))
class BoundaryExpand(GradientMethod):
    """Boundary Expanding: train forget samples into an extra shadow class, then prune it.

    Paper:
        Chen et al., "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision
        Space", CVPR 2023, https://arxiv.org/abs/2303.11570

    The K-way head is widened to K + 1 outputs: the old rows are kept and a randomly initialised "shadow"
    row is added. The whole widened network (train mode) minimises ``CE(f_θ(x), K)`` on ``D_f``; then the
    shadow row is pruned, so the model keeps its K outputs and forget samples fall into the neighbouring
    classes. The shadow row lives beside the model during training (its logit is computed from the head's
    input), which is the same computation as a widened head. ``reference_parity=True`` keeps the shadow
    row in the returned model (K + 1 outputs), as the SalUn port does.

    Args:
        reference_parity: do not prune the shadow class.
        epochs, lr, momentum, weight_decay, batch_size: SGD fine-tuning on D_f (10, 1e-5, 0.9, 0, 128).

    Requires:
        class-wise forgetting; a model whose last layer is an ``nn.Linear`` (``model.head`` if present).

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data("class:1")
        >>> m = unlearnkit.create_method("boundary_expand", epochs=1)
        >>> m.unlearn(tiny_model(trained=True), d).head.out_features
        4
    """

    Config: ClassVar[type[BoundaryExpandConfig]] = BoundaryExpandConfig
    requires: ClassVar[Requirements] = Requirements(retain=False, split_kinds=frozenset({"class"}))
    paper: ClassVar[str | None] = _PAPER
    summary: ClassVar[str] = "train D_f into an extra shadow class, then prune it (class-wise)"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        _, head = _head(model)
        self.num_classes_ = head.out_features
        bound = 1.0 / math.sqrt(head.in_features)  # nn.Linear's default initialisation range
        w = (torch.rand(1, head.in_features, generator=ctx.rng) * 2 - 1) * bound
        b = (torch.rand(1, generator=ctx.rng) * 2 - 1) * bound
        dev, dt = head.weight.device, head.weight.dtype
        self.shadow_weight_ = nn.Parameter(w.to(dev, dt))
        self.shadow_bias_ = nn.Parameter(b.to(dev, dt))
        self.features_: list[torch.Tensor] = []
        self.hook_ = head.register_forward_hook(lambda _m, inp, _out: self.features_.append(inp[0]))

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in model.parameters() if p.requires_grad] + [self.shadow_weight_, self.shadow_bias_]
        return make_optimizer(params, c.optimizer, c.lr, c.momentum, c.weight_decay)

    def schedule(self) -> Iterable[Phase]:
        yield Phase("expand", "forget", self.config.epochs)

    def widened_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits of the K + 1-way network: the model's K logits and the shadow logit."""
        self.features_.clear()
        logits = model(x)
        feats = self.features_[-1]
        self.features_.clear()
        shadow = F.linear(feats, self.shadow_weight_, self.shadow_bias_)
        return torch.cat([logits, shadow], dim=1)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        x, _ = batch.forget  # type: ignore[misc]
        target = torch.full((len(x),), self.num_classes_, dtype=torch.long, device=x.device)
        loss = F.cross_entropy(self.widened_logits(model, x), target)
        return StepOutput(loss, {"shadow_loss": loss.detach()})

    def finalize(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> nn.Module:
        """Prune the shadow class: it lives outside the model, so removing the hook is all it takes; with
        ``reference_parity`` the shadow row is kept as a K + 1-th output instead."""
        self.hook_.remove()
        if self.config.reference_parity:
            _attach_shadow(model, self.shadow_weight_.detach().clone(), self.shadow_bias_.detach().clone())
        return model

    def teardown(self, ctx: RunContext) -> None:
        hook = getattr(self, "hook_", None)
        if hook is not None:
            hook.remove()  # removing twice is harmless; needed when the loop failed before finalize
        super().teardown(ctx)


def _attach_shadow(model: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Replace the head by a K + 1-way Linear holding the old rows and the shadow row (reference parity)."""
    name, head = _head(model)
    wide = nn.Linear(head.in_features, head.out_features + 1, bias=True).to(head.weight.device, head.weight.dtype)
    with torch.no_grad():
        wide.weight.copy_(torch.cat([head.weight, weight]))
        head_bias: torch.Tensor | None = head.bias
        old_bias = head_bias if head_bias is not None else torch.zeros_like(head.weight[:, 0])
        wide.bias.copy_(torch.cat([old_bias, bias]))
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    setattr(parent, name.rpartition(".")[2], wide)
    cfg = getattr(model, "unlearnkit_config", None)
    if isinstance(cfg, dict) and "num_classes" in cfg:
        model.unlearnkit_config = {**cfg, "num_classes": cfg["num_classes"] + 1}  # type: ignore[assignment]


__all__ = [
    "BoundaryExpand",
    "BoundaryExpandConfig",
    "BoundaryShrink",
    "BoundaryShrinkConfig",
    "adversarial_examples",
    "neighbour_labels",
]
