"""What both heads share: the feature embedding and the one-vs-rest label coding.

`embed` maps a backbone feature f ∈ R^d to x̃ = [f/‖f‖, 1]/√2 ∈ R^(d+1) (float64; a zero feature maps to
[0, 1]/√2). Every x̃ has ‖x̃‖ ≤ 1 (the certified head's analysis needs it), the last coordinate is the bias, and
the map is per sample, so deleting a training point changes no other point's embedding (exactness needs that:
a standardisation by the training mean would move with every deletion).
"""

from __future__ import annotations

import math

import torch


def embed(features: torch.Tensor) -> torch.Tensor:
    """x̃ = [f/‖f‖, 1]/√2 for every row f of ``features`` (n × d, flattened when higher-dimensional)."""
    f = features.detach().reshape(len(features), -1).to(torch.float64)
    norm = f.norm(dim=1, keepdim=True)
    f = torch.where(norm > 0, f / norm.clamp_min(1e-300), torch.zeros_like(f))
    return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype, device=f.device)], dim=1) / math.sqrt(2.0)


def signs(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-vs-rest labels in {−1, +1} (n × K): +1 in the column of the true class."""
    out = -torch.ones(len(y), num_classes, dtype=torch.float64, device=y.device)
    out[torch.arange(len(y), device=y.device), y.long()] = 1.0
    return out


__all__ = ["embed", "signs"]
