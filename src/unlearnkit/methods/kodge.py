"""Kodge et al.: training-free class forgetting, the forget class's activation subspace projected out of the weights."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from . import register
from .base import MethodConfig, Requirements, RunContext, UnlearnData, infer_num_classes
from .one_shot import OneShotMethod

_PAPER = (
    "Kodge, Saha, Roy, Deep Unlearning: Fast and Efficient Gradient-free Class Forgetting (TMLR 2024), "
    "https://arxiv.org/abs/2312.00761"
)


@dataclass(frozen=True, kw_only=True)
class KodgeConfig(MethodConfig):
    """Hyper-parameters of `Kodge` (defaults: the authors' CIFAR-10 script, methods.md §12.5).

    Args:
        alpha_r: α_r, scaling of the retain-activation importances (100).
        alpha_f: α_f, scaling of the forget-activation importances (3); α_f → 0 leaves the model unchanged.
        samples: ``our_samples``: forget images used (900), and ``samples // (K − 1)`` images per retain class.
        max_rows: at most this many activation rows (samples × spatial positions) per layer and set (10,000).
        project_classifier: also project the final classifier's input (off by default, as in the VGG code).
        batch_size: batch of the two forward passes.
    """

    alpha_r: float = 100.0
    alpha_f: float = 3.0
    samples: int = 900
    max_rows: int = 10_000
    project_classifier: bool = False
    batch_size: int = 256

    def validate(self) -> None:
        super().validate()
        self.check(self.alpha_r > 0, f"alpha_r must be > 0, got {self.alpha_r}")
        self.check(self.alpha_f >= 0, f"alpha_f must be ≥ 0, got {self.alpha_f}")
        self.check(self.samples >= 1, f"samples must be ≥ 1, got {self.samples}")
        self.check(self.max_rows >= 1, f"max_rows must be ≥ 1, got {self.max_rows}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")


# ------------------------------------------------------------------------------------------------- maths
def scaled_importance(s: torch.Tensor, alpha: float) -> torch.Tensor:
    """``ι_i = α·λ_i / ((α − 1)·λ_i + 1)`` with ``λ_i = S_i² / Σ S²``: each in [0, 1], monotone in λ."""
    energy = s.double() ** 2
    lam = energy / energy.sum().clamp_min(torch.finfo(torch.float64).tiny)
    return alpha * lam / ((alpha - 1.0) * lam + 1.0)


def importance_projector(activations: torch.Tensor, alpha: float) -> torch.Tensor:
    """``M = U · diag(ι) · Uᵀ`` (``d × d``) from the SVD of ``Aᵀ`` (``activations`` is ``N × d``, rows = samples)."""
    a_t = activations.double().T  # d × N
    u, s, _ = torch.linalg.svd(a_t, full_matrices=False)
    iota = scaled_importance(s, alpha)
    return (u * iota) @ u.T


def forget_projection(m_forget: torch.Tensor, m_retain: torch.Tensor) -> torch.Tensor:
    """``P = I − (M_f − M_f·M_r)``: removes what the forget subspace holds and the retain subspace does not."""
    eye = torch.eye(m_forget.shape[0], dtype=m_forget.dtype, device=m_forget.device)
    return eye - (m_forget - m_forget @ m_retain)


@torch.no_grad()
def project_weight_(module: nn.Conv2d | nn.Linear, projection: torch.Tensor) -> None:
    """``W_flat (out × d) ← W_flat · Pᵀ`` in place; the bias is unchanged."""
    w = module.weight
    flat = w.detach().reshape(w.shape[0], -1).double()
    w.copy_((flat @ projection.to(flat.device).T).reshape(w.shape).to(w.dtype))


def unfold_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A layer's input as rows of its ``d``-dimensional input space: samples (Linear) or patches (Conv2d)."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1 or module.padding_mode != "zeros" or module.padding == "same":
            raise NotImplementedError(
                "Kodge projects ungrouped, zero-padded convolutions with explicit padding; "
                f"got groups={module.groups}, padding={module.padding!r}, padding_mode={module.padding_mode!r}"
            )
        pad: Any = 0 if module.padding == "valid" else module.padding
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=pad, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N·L) × (C_in·k·k)
    return x.reshape(-1, x.shape[-1])


# -------------------------------------------------------------------------------------------- the method
def _pick(ds: ImageDataset, labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``n`` random indices of ``ds`` among those whose label is in ``labels``."""
    idx = torch.nonzero(torch.isin(ds.targets, labels)).flatten()
    return idx[torch.randperm(len(idx), generator=generator)[:n]]


@register("kodge", aliases=("kodge_svd", "deep_unlearning"))
class Kodge(OneShotMethod[dict[str, torch.Tensor]]):
    """Training-free class forgetting: project the forget class's input-activation subspace out of every layer.

    Paper:
        Kodge, Saha, Roy, "Deep Unlearning: Fast and Efficient Gradient-free Class Forgetting", TMLR 2024
        (code ``sangamesh-kodge/class_forgetting``; methods.md §12.5).

    In eval mode, one forward pass of the original network over a retain sample (``samples // (K − 1)``
    images of each retain class) and one over ``samples`` forget images record the **input** activations of
    every Conv2d (unfolded into patches, ``C_in·k·k`` columns) and Linear layer; at most ``max_rows`` random
    rows are kept per layer and set. Per layer and set, the SVD of ``Aᵀ`` gives ``U, S``;
    ``λ_i = S_i² / Σ S²``, ``ι_i = α·λ_i / ((α − 1)·λ_i + 1)`` and ``M = U·diag(ι)·Uᵀ`` (``α_r`` on retain
    activations → ``M_r``, ``α_f`` on forget activations → ``M_f``). With ``P = I − (M_f − M_f·M_r)`` every
    recorded layer is edited at once: ``W_flat ← W_flat·Pᵀ``. Biases and BatchNorm are unchanged; the final
    classifier is excluded unless ``project_classifier``. No gradient is ever computed.

    Args:
        alpha_r: α_r (100). alpha_f: α_f (3). samples: 900. max_rows: 10,000.
        project_classifier: project the classifier's input too (False).
        batch_size: batch of the forward passes (256).

    Requires:
        a small retain sample and the forget set, with labels (to pick the images); class-wise forgetting
        only; Conv2d (ungrouped) and Linear layers are projected, any other layer is left as it is.

    Example:
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> from unlearnkit.methods import create_method
        >>> out = create_method("kodge").unlearn(tiny_model(trained=True), tiny_data("class:1"))
    """

    Config: ClassVar[type[KodgeConfig]] = KodgeConfig
    requires: ClassVar[Requirements] = Requirements(split_kinds=frozenset({"class"}))
    paper: ClassVar[str | None] = _PAPER
    summary: ClassVar[str] = "training-free: project the forget class's activation subspace out of the weights (SVD)"
    smoke_config: ClassVar[dict[str, Any]] = {"samples": 64, "batch_size": 32}

    def layers(self, model: nn.Module) -> dict[str, nn.Conv2d | nn.Linear]:
        """The layers to project: every Conv2d and Linear, without the final classifier unless asked for."""
        found = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        if not self.config.project_classifier and found:
            head = getattr(model, "head", None)
            classifier = next((n for n, m in found.items() if m is head), None) if head is not None else None
            found.pop(classifier if classifier is not None else list(found)[-1])
        return found

    @torch.no_grad()
    def activations(self, model: nn.Module, images: ImageDataset, ctx: RunContext) -> dict[str, torch.Tensor]:
        """Input-activation rows (at most ``max_rows``, drawn with ``ctx.rng``) of every projected layer."""
        c = self.config
        layers = self.layers(model)
        rows: dict[str, list[torch.Tensor]] = {n: [] for n in layers}

        def hook(name: str) -> Any:
            def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
                rows[name].append(unfold_input(module, inputs[0].detach()).cpu())

            return record

        handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
        was = model.training
        model.eval()
        try:
            for x, _ in _batches(images, c.batch_size, ctx):
                model(x)
        finally:
            for h in handles:
                h.remove()
            model.train(was)
        out = {}
        for name, parts in rows.items():
            a = torch.cat(parts)
            if len(a) > c.max_rows:
                a = a[torch.randperm(len(a), generator=ctx.rng)[: c.max_rows]]
            out[name] = a
        return out

    def projections(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> dict[str, torch.Tensor]:
        """``P`` per projected layer, from the original network's activations on the two samples."""
        c = self.config
        assert data.retain is not None  # requires.retain, checked before compute
        forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)
        num_classes = infer_num_classes(model, data)
        forget_classes = torch.as_tensor(data.forget_classes or sorted(set(forget.targets.tolist())))
        retain_classes = torch.as_tensor(sorted(set(retain.targets.tolist()) - set(forget_classes.tolist())))
        per_class = max(1, c.samples // max(num_classes - len(forget_classes), 1))
        retain_idx = torch.cat([_pick(retain, k.view(1), per_class, ctx.rng) for k in retain_classes])
        forget_idx = _pick(forget, forget_classes, c.samples, ctx.rng)
        act_r = self.activations(model, retain.subset(retain_idx.numpy()), ctx)
        act_f = self.activations(model, forget.subset(forget_idx.numpy()), ctx)
        return {
            name: forget_projection(
                importance_projector(act_f[name], c.alpha_f), importance_projector(act_r[name], c.alpha_r)
            )
            for name in act_r
        }

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> dict[str, torch.Tensor]:
        return self.projections(model, data, ctx)

    def edit(
        self, model: nn.Module, data: UnlearnData, prepared: dict[str, torch.Tensor], ctx: RunContext
    ) -> nn.Module:
        projections = prepared
        layers = self.layers(model)
        for name, p in projections.items():
            project_weight_(layers[name], p)
        removed = sum(
            float(torch.linalg.matrix_norm(torch.eye(len(p), dtype=p.dtype) - p)) for p in projections.values()
        )
        ctx.log(layers=len(projections), removed_norm=removed)
        model.eval()
        return model


def _batches(ds: ImageDataset, batch_size: int, ctx: RunContext) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return iter_batches(ds, batch_size, device=ctx.device)


__all__ = [
    "Kodge",
    "KodgeConfig",
    "forget_projection",
    "importance_projector",
    "project_weight_",
    "scaled_importance",
    "unfold_input",
]
