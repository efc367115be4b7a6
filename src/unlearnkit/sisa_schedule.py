"""SISA's schedule: the (shard, slice) assignment, the epochs of each stage, the CPU thread count, and the
training indices of a class-wise request.

Kept apart from `unlearnkit.sisa` (which re-exports every name) so both files stay short.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

from .errors import ConfigError


def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def stage_epochs(epochs: int, slices: int) -> list[int]:
    """Epochs of each stage ``r = 1..R``: ``floor(r·avg) − floor((r−1)·avg)`` with ``avg = 2e/(R+1)``."""
    return [(r * 2 * epochs) // (slices + 1) - ((r - 1) * 2 * epochs) // (slices + 1) for r in range(1, slices + 1)]


def min_epochs(slices: int) -> int:
    """The fewest nominal epochs that give every one of ``slices`` stages at least one epoch."""
    e = 1
    while min(stage_epochs(e, slices)) < 1:
        e += 1
    return e


def check_stage_epochs(epochs: int, slices: int) -> None:
    """Refuse a recipe that gives a stage 0 epochs: its slice would be trained on by fewer stages than planned,
    and slices after the last stage with epochs never (`ConfigError`, before any compute)."""
    per = stage_epochs(epochs, slices)
    zero = [r for r, e in enumerate(per, start=1) if e < 1]
    if not zero:
        return
    last = max((r for r, e in enumerate(per, start=1) if e > 0), default=0)
    never = f"; slices {last + 1}–{slices} would never be trained on" if last < slices else ""
    raise ConfigError(
        f"SISA with {slices} slices and {epochs} epochs gives {len(zero)} of {slices} stages 0 epochs "
        f"(stages {', '.join(map(str, zero[:8]))}{'…' if len(zero) > 8 else ''}){never}: raise the epochs "
        f"(--epochs / recipe.epochs) to at least {min_epochs(slices)}, or use fewer slices (--slices)"
    )


@contextlib.contextmanager
def pinned_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` CPU threads (torch's intra-op pool), restoring the count after; None = as is.

    Bit-identical SISA deletions need the thread count the ensemble was trained with: some CPU kernels
    (convolutions, matrix products) split their reductions by thread, so another count changes the low bits.
    """
    before = torch.get_num_threads()
    if threads is None or threads == before:
        yield
        return
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def partition(n: int, shards: int, slices: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random, balanced (shard, slice) assignment of ``n`` training indices (0-based slices)."""
    if shards < 1 or slices < 1:
        raise ConfigError(f"SISA needs shards ≥ 1 and slices ≥ 1, got {shards} and {slices}")
    if n < shards * slices:
        raise ConfigError(f"{n} training points cannot fill {shards} shards × {slices} slices")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    pos = torch.empty(n, dtype=torch.long)
    pos[perm] = torch.arange(n)
    return pos % shards, (pos // shards) % slices


def class_indices(train_set: Dataset, classes: Iterable[int], exclude: torch.Tensor | None = None) -> list[int]:
    """Training indices of ``classes`` (a class-wise request), leaving out ``exclude`` (a deleted mask)."""
    targets = getattr(train_set, "targets", None)
    if not isinstance(targets, torch.Tensor):
        targets = torch.tensor([int(train_set[i][1]) for i in range(len(train_set))])  # type: ignore[arg-type]
    sel = torch.isin(targets.cpu(), torch.as_tensor(list(classes), dtype=torch.long))
    if exclude is not None:
        sel &= ~exclude.cpu()
    return torch.nonzero(sel).flatten().tolist()
