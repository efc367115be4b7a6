"""Registered datasets. Each builder returns a `DatasetBundle` of in-memory image tensors.

Images are kept as uint8 tensors of shape (N, C, H, W); models normalise inputs themselves, so
every loader hands out floats in [0, 1]. Nothing here downloads at import or in tests.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DataNotFoundError
from ..registry import Registry

DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Augment:
    """Training-only augmentation: random crop with zero padding, optional horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channels: int
    image_size: int
    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = field(default_factory=Augment)
    source: str = ""


class ImageDataset(Dataset):
    """Images (uint8 or float in [0, 1], N×C×H×W) and integer labels, indexable like any Dataset."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor) -> None:
        if images.ndim != 4:
            raise ConfigError(f"images must be N×C×H×W, got shape {tuple(images.shape)}")
        if len(images) != len(targets):
            raise ConfigError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return to_float(self.images[i]), int(self.targets[i])

    def subset(self, indices: Any) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(self.images[idx], self.targets[idx])


def to_float(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()


@dataclass(frozen=True)
class DatasetBundle:
    train: ImageDataset
    test: ImageDataset
    info: DatasetInfo


def bundle_digest(bundle: DatasetBundle) -> str:
    """SHA-256 of a dataset's content: train and test images and labels, and the info that shapes a model.

    Computed from the loaded tensors (the decoded, resized pixels for ``image_folder``), so a swapped image,
    a relabelled class or a replaced file changes it; remembered on the bundle, so it is hashed once per load.
    """
    cached = bundle.__dict__.get("_unlearnkit_digest")
    if cached:
        return cached
    from .._io import sha256_json
    from ..cache import tensors_sha256

    parts = {
        "train": tensors_sha256({"images": bundle.train.images, "labels": bundle.train.targets}),
        "test": tensors_sha256({"images": bundle.test.images, "labels": bundle.test.targets}),
        "info": [
            bundle.info.name,
            bundle.info.num_classes,
            bundle.info.channels,
            bundle.info.image_size,
            list(bundle.info.class_names),
        ],
    }
    digest = sha256_json(parts)
    object.__setattr__(bundle, "_unlearnkit_digest", digest)
    return digest


def _check_size(bundle: DatasetBundle) -> DatasetBundle:
    for part in (bundle.train, bundle.test):
        if len(part) == 0:
            raise ConfigError(f"dataset {bundle.info.name!r} has an empty split")
    return bundle


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, **kwargs: Any) -> DatasetBundle:
    """Load a registered dataset by name (see `unlearnkit list datasets`)."""
    builder = DATASETS.get(name)
    if data_dir is not None and str(data_dir) != "":
        p = Path(data_dir)
        if not p.exists():
            raise DataNotFoundError(
                f"--data-dir {p} does not exist; fix the path (or omit --data-dir to use "
                "$UNLEARNKIT_DATA and the system copies)"
            )
        if not p.is_dir():
            raise DataNotFoundError(f"--data-dir {p} is a file, not a folder; pass the folder holding the dataset")
    return _check_size(builder(data_dir=data_dir, **kwargs))


def dataset_summary(name: str) -> str:
    doc = (DATASETS.get(name).__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


# --------------------------------------------------------------------------------------- helpers
def _candidate_dirs(data_dir: str | os.PathLike | None, *subdirs: str) -> list[Path]:
    roots: list[Path] = []
    if data_dir is not None:  # an explicit folder is the only place looked at: no silent fallback
        roots.append(Path(data_dir))
    elif os.environ.get("UNLEARNKIT_DATA"):
        roots.append(Path(os.environ["UNLEARNKIT_DATA"]))
    out: list[Path] = []
    for r in roots:
        out.append(r)
        out.extend(r / s for s in subdirs)
    return out


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DataNotFoundError(f"cannot read IDX file {path}: {exc}. Delete it and fetch the dataset again.") from exc
    if len(data) < 4:
        raise DataNotFoundError(f"IDX file {path} is truncated")
    zero, dtype_code, ndim = data[0:2], data[2], data[3]
    if zero != b"\x00\x00" or dtype_code != 0x08:
        raise DataNotFoundError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataNotFoundError(
            f"IDX file {path} is truncated: expected {int(np.prod(shape))} values, found {arr.size}"
        )
    return arr.reshape(shape)


FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The first folder holding the four Fashion-MNIST IDX files (gzipped or not), or None."""
    dirs = _candidate_dirs(data_dir, "fashion-mnist", "fashion_mnist", "FashionMNIST/raw")
    if data_dir is None:
        dirs.append(DEBIAN_FASHION_MNIST)
    for d in dirs:
        if all((d / f).exists() or (d / (f + ".gz")).exists() for f in FASHION_FILES.values()):
            return d
    return None


@DATASETS.register("fashion_mnist", aliases=("fmnist", "fashion-mnist"))
def fashion_mnist(data_dir: str | os.PathLike | None = None) -> DatasetBundle:
    """Fashion-MNIST: 60k/10k grayscale 28×28 clothing images, 10 classes (gzipped IDX files)."""
    folder = find_fashion_mnist(data_dir)
    if folder is None and data_dir is not None:
        raise DataNotFoundError(
            f"Fashion-MNIST files not found in --data-dir {data_dir} (nor its fashion-mnist/ sub-folder): expected "
            "train-images-idx3-ubyte(.gz) and the three other IDX files; fix the path, fetch them there with "
            f"`unlearnkit fetch fashion_mnist --data-dir {data_dir}`, or omit --data-dir to use the system copy "
            "(`apt-get install dataset-fashion-mnist`)"
        )
    if folder is None:
        raise DataNotFoundError(
            "Fashion-MNIST files not found (looked in --data-dir, $UNLEARNKIT_DATA and "
            f"{DEBIAN_FASHION_MNIST}). Get them with `apt-get install dataset-fashion-mnist` (Debian), or "
            "`unlearnkit fetch fashion_mnist --data-dir DIR` (downloads from the official source and checks "
            "SHA-256), or pass --data-dir pointing to a folder with the four *-ubyte.gz files."
        )

    def part(key: str) -> np.ndarray:
        p = folder / FASHION_FILES[key]
        return _read_idx(p if p.exists() else p.with_name(p.name + ".gz"))

    xtr, ytr, xte, yte = (part(k) for k in ("train_images", "train_labels", "test_images", "test_labels"))
    info = DatasetInfo(
        "fashion_mnist",
        10,
        1,
        28,
        FASHION_CLASSES,
        (0.2860,),
        (0.3530,),
        Augment(crop_padding=2, hflip=True),
        source="relative to data dir",
    )
    return DatasetBundle(
        ImageDataset(torch.from_numpy(xtr.copy()).unsqueeze(1), torch.from_numpy(ytr.astype(np.int64))),
        ImageDataset(torch.from_numpy(xte.copy()).unsqueeze(1), torch.from_numpy(yte.astype(np.int64))),
        info,
    )


@DATASETS.register("digits")
def digits(data_dir: str | os.PathLike | None = None, test_fraction: float = 0.25) -> DatasetBundle:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images), fixed stratified 75/25 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    idx = np.arange(len(images))
    tr, te = train_test_split(idx, test_size=test_fraction, stratify=d.target, random_state=0)
    tr.sort(), te.sort()
    x = torch.from_numpy(images).unsqueeze(1)
    y = torch.from_numpy(d.target.astype(np.int64))
    info = DatasetInfo(
        "digits",
        10,
        1,
        8,
        tuple(str(i) for i in range(10)),
        (0.3,),
        (0.38,),
        Augment(crop_padding=1, hflip=False),
        source="sklearn.datasets.load_digits",
    )
    return DatasetBundle(ImageDataset(x[tr], y[tr]), ImageDataset(x[te], y[te]), info)


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class _CifarUnpickler(pickle.Unpickler):
    """Reads CIFAR's python batches while refusing any global but the few numpy needs."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a CIFAR batch file")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            d = _CifarUnpickler(fh, encoding="bytes").load()
        data = d.get(b"data", d.get("data"))
        labels = d.get(b"labels", d.get("labels"))
        data = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        return data, np.asarray(labels, dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise DataNotFoundError(f"{path} is not a valid CIFAR-10 python batch: {exc}") from exc


@DATASETS.register("cifar10")
def cifar10(data_dir: str | os.PathLike | None = None) -> DatasetBundle:
    """CIFAR-10 from a local folder in the python-pickle batch format (cifar-10-batches-py)."""
    names = [f"data_batch_{i}" for i in range(1, 6)]
    folder = next(
        (
            d
            for d in _candidate_dirs(data_dir, "cifar-10-batches-py", "cifar10")
            if all((d / n).exists() for n in [*names, "test_batch"])
        ),
        None,
    )
    if folder is None:
        raise DataNotFoundError(
            "CIFAR-10 python batches not found: pass --data-dir (or set $UNLEARNKIT_DATA) to a folder holding "
            "cifar-10-batches-py/ (data_batch_1..5 and test_batch), as unpacked from cifar-10-python.tar.gz."
        )
    parts = [_load_cifar_batch(folder / n) for n in names]
    xte, yte = _load_cifar_batch(folder / "test_batch")
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    info = DatasetInfo(
        "cifar10",
        10,
        3,
        32,
        CIFAR10_CLASSES,
        (0.4914, 0.4822, 0.4465),
        (0.2023, 0.1994, 0.2010),
        Augment(crop_padding=4, hflip=True),
        source="cifar-10-batches-py",
    )
    return DatasetBundle(
        ImageDataset(torch.from_numpy(xtr), torch.from_numpy(ytr)),
        ImageDataset(torch.from_numpy(xte), torch.from_numpy(yte)),
        info,
    )


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


@DATASETS.register("image_folder")
def image_folder(
    data_dir: str | os.PathLike | None = None,
    image_size: int = 32,
    channels: int = 3,
    test_fraction: float = 0.2,
    split_seed: int = 0,
) -> DatasetBundle:
    """Class sub-folders of PNG/JPEG images (read with Pillow), resized, with a seeded stratified split."""
    from PIL import Image

    if data_dir is None:
        raise DataNotFoundError("image_folder needs --data-dir pointing to a folder with one sub-folder per class")
    root = Path(data_dir)
    classes = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    )
    if not classes:
        raise DataNotFoundError(f"{root} has no class sub-folders; expected ROOT/<class>/<image>.png")
    xs, ys = [], []
    mode = "L" if channels == 1 else "RGB"
    for ci, c in enumerate(classes):
        files = [f for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
        if not files:
            raise DataNotFoundError(
                f"class folder {root / c} holds no image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                "add images or remove the folder"
            )
        for f in files:
            try:
                with Image.open(f) as src:
                    im = src.convert(mode).resize((image_size, image_size), Image.Resampling.BILINEAR)
                    arr = np.asarray(im, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
                why = str(exc).splitlines()[0] if str(exc) else "damaged"
                raise DataNotFoundError(
                    f"cannot read image {f} ({type(exc).__name__}: {why}); replace or remove that file"
                ) from None
            xs.append(arr[None] if channels == 1 else arr.transpose(2, 0, 1))
            ys.append(ci)
    if len(xs) < 2:
        raise DataNotFoundError(f"{root} holds fewer than two images")
    x = torch.from_numpy(np.stack(xs))
    y = np.asarray(ys, dtype=np.int64)
    rng = np.random.default_rng(split_seed)
    test_idx = []
    for ci in range(len(classes)):
        members = np.flatnonzero(y == ci)
        n_test = round(len(members) * test_fraction) if len(members) > 1 else 0
        test_idx.extend(rng.permutation(members)[:n_test].tolist())
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[test_idx] = True
    yt = torch.from_numpy(y)
    mean = tuple(float(v) for v in (x.float() / 255).mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in (x.float() / 255).std(dim=(0, 2, 3)))
    info = DatasetInfo(
        "image_folder",
        len(classes),
        channels,
        image_size,
        tuple(classes),
        mean,
        std,
        Augment(crop_padding=max(1, image_size // 8), hflip=True),
        source=root.name,
    )
    tr, te = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    return DatasetBundle(ImageDataset(x[tr], yt[tr]), ImageDataset(x[te], yt[te]), info)


@DATASETS.register("synthetic")
def synthetic(
    data_dir: str | os.PathLike | None = None,
    num_classes: int = 4,
    channels: int = 3,
    image_size: int = 8,
    n_train: int = 128,
    n_test: int = 64,
    seed: int = 0,
    noise: float = 0.35,
) -> DatasetBundle:
    """Tiny deterministic images (class-dependent patterns plus noise) for tests and docs."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(num_classes, channels, image_size, image_size, generator=g)

    def make(n: int) -> ImageDataset:
        y = torch.arange(n) % num_classes
        x = protos[y] + noise * torch.randn(n, channels, image_size, image_size, generator=g)
        return ImageDataset((x.clamp(0, 1) * 255).round().to(torch.uint8), y)

    info = DatasetInfo(
        "synthetic",
        num_classes,
        channels,
        image_size,
        tuple(f"class_{i}" for i in range(num_classes)),
        (0.5,) * channels,
        (0.3,) * channels,
        Augment(crop_padding=1, hflip=False),
        source="generated",
    )
    return DatasetBundle(make(n_train), make(n_test), info)
