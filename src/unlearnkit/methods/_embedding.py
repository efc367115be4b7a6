"""Helpers shared by the embedding-space methods (DUCK, SCAR): the backbone/head split, the nearest wrong class,
the relabelled forget set and the per-epoch MultiStepLR (so that no method imports another method)."""

from __future__ import annotations

import torch
from torch import nn

from ..data.datasets import ImageDataset
from ..errors import IncompatibleError


def check_embedding_model(model: nn.Module, method: str) -> None:
    """Raise `IncompatibleError` unless ``model`` splits into ``forward_features`` (backbone φ) and ``head``."""
    if not callable(getattr(model, "forward_features", None)) or not isinstance(
        getattr(model, "head", None), nn.Module
    ):
        raise IncompatibleError(
            f"`{method}` works in the penultimate embedding space and needs a model with `forward_features(x)` "
            "(the backbone φ, flattened) and a `head` module (unlearnkit's models have both)"
        )


def embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """φ(x): the penultimate embedding, flattened to (batch, d)."""
    return model.forward_features(x).flatten(1)  # type: ignore[operator]


def nearest_wrong_targets(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``argmin_k d_k`` per row, or the second nearest when the nearest is the row's own label.

    ``distances`` is (n, K) with ``inf`` for classes that have no centroid (e.g. the forgotten class).
    """
    d = distances.clone()
    d[torch.arange(len(labels), device=d.device), labels.to(d.device)] = float("inf")
    if not torch.isfinite(d).any(dim=1).all():
        raise IncompatibleError("no class other than the sample's own has a centroid: nothing to move towards")
    return d.argmin(dim=1)


def relabelled(ds: ImageDataset, targets: torch.Tensor) -> ImageDataset:
    """The forget images with their labels replaced by ``targets`` (the fixed target classes)."""
    return ImageDataset(ds.images, targets)


def multistep_lr(lr: float, epoch: int, milestones: tuple[int, ...], gamma: float) -> float:
    """MultiStepLR stepped once per epoch: in (1-based) epoch ``e``, ``lr · γ^#{m ≤ e − 1}``."""
    return lr * gamma ** sum(1 for m in milestones if m <= epoch - 1)


__all__ = ["check_embedding_model", "embed", "multistep_lr", "nearest_wrong_targets", "relabelled"]
