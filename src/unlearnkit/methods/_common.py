"""Private helpers shared by the method files: per-sample gradients, gradient sums, magnitude-pruning masks."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..data.datasets import Augment, to_float
from ..data.loading import as_image_dataset, iter_batches


def concat_images(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Stack two image tensors; uint8 and float images meet as floats in [0, 1] (never a cast to uint8)."""
    if a.dtype == b.dtype:
        return torch.cat([a, b])
    return torch.cat([to_float(a), to_float(b)])


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) pairs that require gradients, in ``model.parameters()`` order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def reinitialize_(model: nn.Module, seed: int) -> nn.Module:
    """Call ``reset_parameters()`` on every module that has one (BatchNorm statistics too), seeded by ``seed``.

    The draw happens on the CPU under a forked CPU generator and the model then returns to its device, so
    the result is the same on every device and no global generator (CPU or CUDA) is touched.
    """
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    model.cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in model.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return model.to(device)


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten_add_(params: Sequence[torch.Tensor], flat: torch.Tensor, scale: float = 1.0) -> None:
    """``p += scale · slice`` for consecutive slices of ``flat`` (the order of ``params``)."""
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.add_(flat[offset : offset + n].view_as(p).to(p.dtype), alpha=scale)
            offset += n


def per_sample_grad_chunks(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, names: list[str], chunk: int | None = None
) -> Iterator[torch.Tensor]:
    """Flattened per-sample gradients of ``CE(model(x_i), targets_i)`` (one row per sample), chunk by chunk.

    The model is evaluated as it is (call ``model.eval()`` first so BatchNorm uses running statistics, which
    makes a per-sample gradient well defined). Uses ``torch.func.vmap``, the same numbers as a loop of
    batch-size-1 backward passes, much faster.
    """
    from torch.func import functional_call, grad, vmap

    params = dict(model.named_parameters())
    wrt = {n: params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in params.items() if n not in wrt}
    buffers = dict(model.named_buffers())

    def loss_one(w: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, ({**rest, **w}, buffers), (xi.unsqueeze(0),))
        return F.cross_entropy(out, yi.unsqueeze(0))

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))
    numel = sum(wrt[n].numel() for n in names)
    chunk = chunk or max(1, min(256, (1 << 25) // max(numel, 1)))
    for start in range(0, len(x), chunk):
        grads = g(wrt, x[start : start + chunk], targets[start : start + chunk])
        yield torch.cat([grads[n].reshape(grads[n].shape[0], -1) for n in names], dim=1)


def gradient_sum(
    model: nn.Module,
    ds: Dataset,
    batch_size: int,
    device: torch.device,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``Σ_i ∇ℓ_i`` over ``ds`` as one flat vector: per batch, the gradient of the mean loss times the batch size."""
    params = [p for _, p in trainable(model)]
    total = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64, device=device)
    loss_fn = loss_fn or F.cross_entropy
    for x, y in iter_batches(as_image_dataset(ds), batch_size, augment=augment, generator=generator, device=device):
        grads = torch.autograd.grad(loss_fn(model(x), y), params)
        total += flatten([g.detach() for g in grads]).double() * len(y)
    return total


def magnitude_prune_masks(model: nn.Module, rate: float) -> dict[str, torch.Tensor]:
    """One-shot global unstructured magnitude pruning of all ``Conv2d`` weights together.

    Exactly ``round(rate × #conv weights)`` entries with the smallest ``|w|`` get mask 0 (ties broken by position).
    The linear head, other linear layers, BatchNorm and biases are never pruned (methods.md §6.2).
    """
    convs = [
        (f"{name}.weight" if name else "weight", m.weight)
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    if not convs:
        return {}
    flat = torch.cat([w.detach().abs().reshape(-1).cpu() for _, w in convs])
    k = round(rate * flat.numel())
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if k > 0:
        keep[torch.argsort(flat, stable=True)[:k]] = False
    masks, offset = {}, 0
    for name, w in convs:
        n = w.numel()
        masks[name] = keep[offset : offset + n].view_as(w).to(device=w.device, dtype=w.dtype)
        offset += n
    return masks


def apply_masks_(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, m in masks.items():
            params[name].mul_(m.to(params[name].device))
