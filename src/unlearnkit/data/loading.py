"""Fast batching over in-memory image tensors, with seeded training-only augmentation."""

from __future__ import annotations

from typing import Iterator

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
        rows = (dy[:, None] + torch.arange(h)[None, :])  # n×h
        cols = (dx[:, None] + torch.arange(w)[None, :])  # n×w
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


def num_batches(ds: Dataset, batch_size: int, drop_last: bool = False) -> int:
    n = len(ds)  # type: ignore[arg-type]
    return n // batch_size if drop_last else -(-n // batch_size)
