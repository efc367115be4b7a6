"""Batching: a fast path over in-memory image tensors (seeded training-only augmentation), and a DataLoader
path for any other map-style torch Dataset (its own transforms run afresh on every pass, optionally in workers).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, cast

import torch
from torch.utils.data import Dataset

from .datasets import Augment, ImageDataset, to_float


def as_image_dataset(ds: Dataset) -> ImageDataset:
    """Our tensor dataset as it is; any other map-style Dataset of (image, label) is materialised once."""
    if isinstance(ds, ImageDataset):
        return ds
    xs, ys = [], []
    for i in range(len(ds)):  # type: ignore[arg-type]
        x, y = ds[i]
        xs.append(torch.as_tensor(x))
        ys.append(int(y))
    if not xs:
        return ImageDataset(torch.zeros(0, 1, 1, 1), torch.zeros(0, dtype=torch.long))
    return ImageDataset(torch.stack(xs).float(), torch.tensor(ys))


def augment_batch(x: torch.Tensor, aug: Augment, generator: torch.Generator | None) -> torch.Tensor:
    """Random crop (zero padding ``aug.crop_padding``) and optional horizontal flip, per sample."""
    n, _, h, w = x.shape
    if aug.crop_padding > 0:
        p = aug.crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * p + 1, (n,), generator=generator)
        rows = dy[:, None] + torch.arange(h)[None, :]  # n×h
        cols = dx[:, None] + torch.arange(w)[None, :]  # n×w
        bidx = torch.arange(n)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if aug.hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def iter_batches(
    ds: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images in [0, 1] as float on ``device``, labels) batches."""
    data = as_image_dataset(ds)
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - (n % batch_size) if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        x = to_float(data.images[idx])
        if augment is not None and (augment.crop_padding or augment.hflip):
            x = augment_batch(x, augment, generator)
        yield x.to(device, non_blocking=True), data.targets[idx].to(device, non_blocking=True)


def _collate(batch: Sequence[tuple[object, object]]) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*batch, strict=True)
    labels = [int(cast(Any, y)) for y in ys]  # ints or 0-d tensors
    return torch.stack([torch.as_tensor(x) for x in xs]).float(), torch.as_tensor(labels)


def stream_batches(
    ds: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``ds`` in batches on ``device``: `iter_batches` for an `ImageDataset`; for any other
    Dataset a `DataLoader` (shuffled with a seed drawn from ``generator``), so the dataset's own transforms
    (e.g. a torchvision augmentation) give fresh samples on every pass. ``augment`` applies to both paths.
    """
    if isinstance(ds, ImageDataset):
        yield from iter_batches(ds, batch_size, shuffle=shuffle, generator=generator, augment=augment, device=device)
        return
    from torch.utils.data import DataLoader

    g = None
    if shuffle:
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=g,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=False,
    )
    for x, y in loader:
        if augment is not None and (augment.crop_padding or augment.hflip):
            x = augment_batch(x, augment, generator)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def sample_batch(
    ds: Dataset,
    n: int,
    *,
    generator: torch.Generator | None,
    augment: Augment | None = None,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` examples of ``ds`` drawn uniformly with replacement (the partner batch of a paired step)."""
    idx = torch.randint(0, len(ds), (n,), generator=generator)  # type: ignore[arg-type]
    if isinstance(ds, ImageDataset):
        return next(iter_batches(ds.subset(idx.numpy()), n, generator=generator, augment=augment, device=device))
    x, y = _collate([ds[int(i)] for i in idx])
    if augment is not None and (augment.crop_padding or augment.hflip):
        x = augment_batch(x, augment, generator)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def cycle_batches(ds: Dataset, batch_size: int, **kw: object) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless shuffled batches of ``ds``, reshuffled on every pass (``stream_batches`` keywords)."""
    if len(ds) == 0:  # type: ignore[arg-type]
        raise ValueError("cannot cycle over an empty dataset")
    while True:
        yield from stream_batches(ds, batch_size, shuffle=True, **kw)  # type: ignore[arg-type]


def num_batches(ds: Dataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(ds)  # type: ignore[arg-type]
    return n // batch_size if drop_last else -(-n // batch_size)
