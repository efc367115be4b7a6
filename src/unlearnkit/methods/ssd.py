"""SSD: Selective Synaptic Dampening, a one-shot edit of parameters far more important for D_f than for D."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..data.datasets import Augment, ImageDataset, to_float
from ..data.loading import as_image_dataset, iter_batches
from . import register
from ._saliency import fisher_diagonal, fisher_diagonal_batches, trainable_parameters
from .base import MethodConfig, RunContext, UnlearnData
from .one_shot import OneShotMethod

_Importances = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass(frozen=True, kw_only=True)
class SSDConfig(MethodConfig):
    """Hyper-parameters of `SSD` (defaults: the official code for ResNet-18).

    ``batch_order`` is the order of the importance batches: ``class_sorted`` groups each set by class and
    batches every class on its own (each batch holds one class), as the official class-wise code does (its
    retain set is built class by class and its loaders do not shuffle); ``shuffled`` draws mixed batches;
    ``auto`` (default) takes ``class_sorted`` for class-wise splits and ``shuffled`` for random ones (the
    official random-forgetting code uses a random split).
    """

    dampening_constant: float = 1.0
    selection_weighting: float = 10.0
    batch_size: int = 128
    importance_set: Literal["full", "retain"] = "full"
    augment: bool = False
    batch_order: Literal["auto", "class_sorted", "shuffled"] = "auto"
    threshold: Literal["fixed", "auto"] = "fixed"

    def validate(self) -> None:
        super().validate()
        self.check(self.dampening_constant >= 0, f"dampening_constant (λ) must be ≥ 0, got {self.dampening_constant}")
        self.check(
            self.selection_weighting >= 0, f"selection_weighting (α) must be ≥ 0, got {self.selection_weighting}"
        )
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(
            self.importance_set in ("full", "retain"),
            f"importance_set must be 'full' or 'retain', got {self.importance_set!r}",
        )
        self.check(
            self.batch_order in ("auto", "class_sorted", "shuffled"),
            f"batch_order must be 'auto', 'class_sorted' or 'shuffled', got {self.batch_order!r}",
        )
        self.check(self.threshold in ("fixed", "auto"), f"threshold must be 'fixed' or 'auto', got {self.threshold!r}")


def class_sorted_batches(
    ds: ImageDataset,
    batch_size: int,
    device: torch.device | str,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of ``ds`` class by class in ascending label order, no shuffling: every batch holds one class
    (a class's last batch may be smaller). Within a class the dataset order is kept."""
    for label in torch.unique(ds.targets).tolist():
        idx = torch.nonzero(ds.targets == label).flatten()
        yield from iter_batches(ds.subset(idx.numpy()), batch_size, augment=augment, generator=generator, device=device)


def assd_percentile(forget_size: int, data_size: int) -> float:
    """ASSD's selection percentile ``100 − ln(1 + 100·|D_f|/|D|)`` (Schoepf, Foster & Brintrup 2024)."""
    if data_size <= 0 or forget_size < 0:
        raise ValueError(f"need |D| > 0 and |D_f| ≥ 0, got {data_size} and {forget_size}")
    return 100.0 - math.log1p(100.0 * forget_size / data_size)


@torch.no_grad()
def assd_alpha(
    importance_forget: Mapping[str, torch.Tensor], importance_data: Mapping[str, torch.Tensor], percentile: float
) -> float:
    """The selection weight α of ASSD: the ``percentile`` of the ratios ``I_f / I_D`` over every parameter entry.

    An entry with ``I_D = 0`` has ratio +inf when ``I_f > 0`` and 0 when both are 0. The percentile is the
    ``ceil(percentile/100 · N)``-th smallest ratio (nearest rank), so SSD's strict rule ``I_f > α · I_D`` then
    selects at most the ``100 − percentile`` % of entries with the largest ratios.
    """
    ratios = []
    for name, i_f in importance_forget.items():
        f, d = i_f.detach().double().flatten().cpu(), importance_data[name].detach().double().flatten().cpu()
        r = torch.where(d > 0, f / torch.where(d > 0, d, torch.ones_like(d)), torch.where(f > 0, math.inf, 0.0))
        ratios.append(r)
    flat = torch.cat(ratios)
    k = min(max(math.ceil(percentile / 100.0 * flat.numel()), 1), flat.numel())
    return float(flat.kthvalue(k).values)


@torch.no_grad()
def dampen(
    params: Mapping[str, torch.Tensor],
    importance_forget: Mapping[str, torch.Tensor],
    importance_data: Mapping[str, torch.Tensor],
    *,
    alpha: float,
    lam: float,
) -> dict[str, int]:
    """Apply SSD's rule in place and return the number of dampened entries per parameter.

    Where ``I_f > α · I_D`` (strict), ``θ ← β · θ`` with ``β = min(λ · I_D / I_f, 1)``; elsewhere ``θ`` is
    left bit-identical.
    """
    counts = {}
    for name, p in params.items():
        i_f, i_d = importance_forget[name].to(p.device), importance_data[name].to(p.device)
        selected = i_f > alpha * i_d
        beta = torch.where(
            selected,
            (lam * i_d / torch.where(selected, i_f, torch.ones_like(i_f))).clamp(max=1.0),
            torch.ones_like(i_f),
        )
        p.copy_(torch.where(selected, p * beta.to(p.dtype), p))
        counts[name] = int(selected.sum())
    return counts


@register("ssd", aliases=("selective_synaptic_dampening",))
class SSD(OneShotMethod[_Importances]):
    """SSD: dampen the parameters that are much more important for the forget set than for the data.

    Paper:
        Foster, Schoepf, Brintrup, "Fast Machine Unlearning Without Retraining Through Selective Synaptic
        Dampening", AAAI 2024, https://arxiv.org/abs/2308.07707

    Retrain-free. In eval mode, the diagonal Fisher importances ``I_S = mean_batches (∂L_batch/∂θ)²`` are
    computed on ``D_f`` and on ``D = D_r ∪ D_f`` (or ``D_r`` with ``importance_set="retain"``). Every
    parameter entry with ``I_f > α · I_D`` is scaled by ``β = min(λ · I_D / I_f, 1)``; all others are
    unchanged. Nothing is trained.

    Args:
        dampening_constant: λ (1).
        selection_weighting: α (10 for ResNet-18; 5 for ViTs in the official code).
        batch_size: batch of the importance passes (128).
        importance_set: ``full`` (D_r ∪ D_f, the paper) or ``retain`` (D_r only).
        augment: use the dataset's training augmentation in the importance passes.
        batch_order: ``auto`` (class-sorted single-class batches for class-wise forgetting, as the official
            code; shuffled for random forgetting), ``class_sorted`` or ``shuffled``.
        threshold: ``fixed`` uses ``selection_weighting`` as α; ``auto`` is ASSD (Schoepf, Foster & Brintrup,
            "Parameter-tuning-free data entry error unlearning with adaptive selective synaptic dampening", 2024):
            α is the ``100 − ln(1 + 100·|D_f|/|D|)`` percentile of ``I_f / I_D`` over all parameter entries
            (|D| = retain + forget), λ stays ``dampening_constant``; ``selection_weighting`` is then unused.

    Requires:
        a retain set and forget labels; random or class-wise forgetting.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data()
        >>> out = unlearnkit.unlearn(tiny_model(trained=True), d.forget, d.retain, method="ssd", device="cpu")
        >>> out.head.out_features
        4
    """

    Config: ClassVar[type[SSDConfig]] = SSDConfig
    paper: ClassVar[str | None] = (
        "Fast Machine Unlearning Without Retraining Through Selective Synaptic "
        "Dampening (AAAI 2024), https://arxiv.org/abs/2308.07707"
    )
    summary: ClassVar[str] = "one-shot: shrink parameters far more Fisher-important for D_f than for D"
    # With class-sorted importances (the class-wise default) α 10 selects no weight of the tiny model; 2 does.
    smoke_config: ClassVar[dict[str, Any]] = {"batch_size": 32, "selection_weighting": 2.0}

    def importances(
        self,
        model: nn.Module,
        data: UnlearnData,
        ctx: RunContext,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """``(I_f, I_D)``: diagonal Fisher importances on the forget set and on the reference data."""
        c = self.config
        aug = data.augment if c.augment else None
        assert data.retain is not None  # requires.retain, checked before compute
        forget, retain = as_image_dataset(data.forget), as_image_dataset(data.retain)
        if c.importance_set == "full":
            if forget.images.dtype == retain.images.dtype:
                images = torch.cat([retain.images, forget.images])
            else:
                images = torch.cat([to_float(retain.images), to_float(forget.images)])
            reference = ImageDataset(images, torch.cat([retain.targets, forget.targets]))
        else:
            reference = retain
        if self.batch_order(data) == "shuffled":
            kw = {"batch_size": c.batch_size, "device": ctx.device, "augment": aug, "generator": ctx.rng}
            return fisher_diagonal(model, forget, shuffle=True, **kw), fisher_diagonal(
                model, reference, shuffle=True, **kw
            )
        return (
            fisher_diagonal_batches(model, class_sorted_batches(forget, c.batch_size, ctx.device, aug, ctx.rng)),
            fisher_diagonal_batches(model, class_sorted_batches(reference, c.batch_size, ctx.device, aug, ctx.rng)),
        )

    def batch_order(self, data: UnlearnData) -> Literal["class_sorted", "shuffled"]:
        """The resolved ``batch_order``: ``auto`` is class-sorted for class-wise splits, shuffled otherwise."""
        order = self.config.batch_order
        if order == "auto":
            return "class_sorted" if data.split_kind == "class" else "shuffled"
        return order

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> _Importances:
        return self.importances(model, data, ctx)

    def edit(self, model: nn.Module, data: UnlearnData, prepared: _Importances, ctx: RunContext) -> nn.Module:
        c = self.config
        i_f, i_d = prepared
        alpha = c.selection_weighting
        if c.threshold == "auto":
            n_f = len(data.forget)  # type: ignore[arg-type]
            alpha = assd_alpha(i_f, i_d, assd_percentile(n_f, n_f + len(data.retain)))  # type: ignore[arg-type]
        counts = dampen(trainable_parameters(model), i_f, i_d, alpha=alpha, lam=c.dampening_constant)
        total = sum(t.numel() for t in i_f.values())
        ctx.log(dampened=sum(counts.values()), parameters=total, selection_weighting=alpha)
        model.eval()
        return model


__all__ = ["SSD", "SSDConfig", "assd_alpha", "assd_percentile", "class_sorted_batches", "dampen"]
