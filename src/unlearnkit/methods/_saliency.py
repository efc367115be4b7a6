"""Gradient statistics shared by saliency- and importance-based methods (SalUn, SSD).

Private helpers: every function takes the model and data explicitly and returns plain dicts keyed by
parameter name, so methods stay short and the maths is testable on its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..data.datasets import Augment
from ..data.loading import iter_batches


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Named parameters that take gradients (the weights a method may change)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _batch_gradients(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
) -> Iterator[dict[str, torch.Tensor]]:
    """Per batch, the gradient of the batch-mean cross-entropy w.r.t. every trainable parameter (eval mode)."""
    params = trainable_parameters(model)
    was = model.training
    model.eval()
    try:
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            grads: Sequence[torch.Tensor | None] = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            yield {
                n: (g.detach() if g is not None else torch.zeros_like(p))
                for (n, p), g in zip(params.items(), grads, strict=False)
            }
    finally:
        model.train(was)


def gradient_saliency(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device | str,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """SalUn weight saliency ``|Σ_batches ∇ L_batch|`` over ``dataset`` at the current weights.

    The signed batch-mean gradients are summed first and the absolute value taken last, as the reference
    ``generate_mask.py`` does (the sign of the loss is irrelevant). The model is in eval mode.
    """
    total: dict[str, torch.Tensor] = {}
    batches = iter_batches(
        dataset, batch_size, shuffle=augment is not None, generator=generator, augment=augment, device=device
    )
    for grads in _batch_gradients(model, batches):
        for n, g in grads.items():
            total[n] = total[n] + g if n in total else g.clone()
    return {n: g.abs() for n, g in total.items()}


def fisher_diagonal(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    device: torch.device | str,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    shuffle: bool = False,
) -> dict[str, torch.Tensor]:
    """SSD importance: the mean over batches of the squared batch-mean gradient, ``mean_b (∂L_b/∂θ)²``."""
    batches = iter_batches(dataset, batch_size, shuffle=shuffle, generator=generator, augment=augment, device=device)
    return fisher_diagonal_batches(model, batches)


def fisher_diagonal_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """`fisher_diagonal` over the given (images, labels) batches, in their order."""
    total: dict[str, torch.Tensor] = {}
    count = 0
    for grads in _batch_gradients(model, batches):
        count += 1
        for n, g in grads.items():
            sq = g.pow(2)
            total[n] = total[n] + sq if n in total else sq
    return {n: t / max(count, 1) for n, t in total.items()}


def global_topk_mask(scores: dict[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Binary masks (same shapes as ``scores``) keeping the ``floor(ratio · P)`` largest entries over all tensors.

    One global ranking over the concatenation of every tensor (P entries in all); ties are broken by
    position (stable sort), which matches ``argsort(argsort(-s)) < floor(ratio · P)``.
    """
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must be in [0, 1], got {ratio}")
    names = list(scores)
    flat = torch.cat([scores[n].reshape(-1).float() for n in names]) if names else torch.zeros(0)
    k = int(ratio * flat.numel())
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        order = torch.argsort(-flat, stable=True)
        keep[order[:k]] = True
    masks, start = {}, 0
    for n in names:
        size = scores[n].numel()
        masks[n] = keep[start : start + size].view_as(scores[n]).to(scores[n].dtype)
        start += size
    return masks


__all__ = [
    "fisher_diagonal",
    "fisher_diagonal_batches",
    "global_topk_mask",
    "gradient_saliency",
    "trainable_parameters",
]
