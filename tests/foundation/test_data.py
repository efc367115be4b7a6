import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from unlearnkit.data import load_dataset
from unlearnkit.data.datasets import Augment, find_fashion_mnist
from unlearnkit.data.loading import augment_batch, iter_batches
from unlearnkit.errors import DataNotFoundError, UnknownNameError


def _write_idx(path, arr):
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "fashion-mnist"
    d.mkdir()
    _write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 28, 28)))
    _write_idx(d / "train-labels-idx1-ubyte.gz", np.arange(50) % 10)
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (20, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", np.arange(20) % 10)
    return tmp_path


def test_fashion_mnist_idx_parser(fake_fashion):
    b = load_dataset("fashion_mnist", fake_fashion)  # finds the fashion-mnist/ sub-folder
    assert b.train.images.shape == (50, 1, 28, 28) and b.test.images.shape == (20, 1, 28, 28)
    assert b.train.targets.tolist() == [i % 10 for i in range(50)]
    assert b.info.num_classes == 10 and b.info.class_names[0] == "T-shirt/top"


def test_fashion_mnist_env_var(fake_fashion, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_DATA", str(fake_fashion / "fashion-mnist"))
    assert find_fashion_mnist(None) == fake_fashion / "fashion-mnist"


def test_fashion_mnist_truncated(fake_fashion):
    p = fake_fashion / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(p.read_bytes())
    with gzip.open(p, "wb") as fh:
        fh.write(data[:1000])
    with pytest.raises(DataNotFoundError, match="truncated"):
        load_dataset("fashion_mnist", fake_fashion)


def test_missing_dataset_files_say_how_to_get_them(tmp_path, monkeypatch):
    import unlearnkit.data.datasets as ds

    monkeypatch.delenv("UNLEARNKIT_DATA", raising=False)
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError) as err:
        load_dataset("fashion_mnist", tmp_path)
    msg = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "unlearnkit fetch" in msg and "--data-dir" in msg
    with pytest.raises(DataNotFoundError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path)


def test_unknown_dataset_did_you_mean():
    with pytest.raises(UnknownNameError, match="did you mean 'digits'"):
        load_dataset("digit")


def test_digits_fixed_stratified_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.train.images, b.train.images)
    assert len(a.train) + len(a.test) == 1797
    counts = np.bincount(a.test.targets.numpy())
    assert counts.min() >= 40 and a.info.image_size == 8 and a.info.channels == 1


def _cifar_batch(path, n, rng):
    d = {b"data": rng.integers(0, 255, (n, 3072)).astype(np.uint8), b"labels": list(rng.integers(0, 10, n))}
    d[b"labels"] = [int(v) for v in d[b"labels"]]
    with open(path, "wb") as fh:
        pickle.dump(d, fh)


def test_cifar10_python_format(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        _cifar_batch(folder / f"data_batch_{i}", 4, rng)
    _cifar_batch(folder / "test_batch", 3, rng)
    b = load_dataset("cifar10", tmp_path)
    assert b.train.images.shape == (20, 3, 32, 32) and len(b.test) == 3 and b.info.class_names[0] == "airplane"


def test_cifar10_refuses_code_in_pickle(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": Evil(), b"labels": [0]}, fh)
    with pytest.raises(DataNotFoundError, match="refusing"):
        load_dataset("cifar10", tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog", "fox"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    b = load_dataset("image_folder", tmp_path, image_size=16)
    assert b.info.class_names == ("cat", "dog", "fox") and b.info.num_classes == 3
    assert len(b.train) + len(b.test) == 15 and b.train.images.shape[1:] == (3, 16, 16)
    assert sorted(np.bincount(b.test.targets.numpy()).tolist()) == [1, 1, 1]


def test_synthetic_is_deterministic():
    a, b = load_dataset("synthetic"), load_dataset("synthetic")
    assert torch.equal(a.train.images, b.train.images) and a.info.num_classes == 4


def test_augmentation_is_training_only_and_seeded():
    b = load_dataset("synthetic")
    plain = next(iter_batches(b.test, 16))[0]
    assert torch.equal(plain, b.test.images[:16].float() / 255)  # evaluation: no augmentation
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    x = plain.clone()
    a1 = augment_batch(x, Augment(crop_padding=1, hflip=True), g1)
    a2 = augment_batch(x, Augment(crop_padding=1, hflip=True), g2)
    assert torch.equal(a1, a2) and a1.shape == x.shape and not torch.equal(a1, x)


def test_augment_crop_is_a_shift():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = augment_batch(x, Augment(crop_padding=1), torch.Generator().manual_seed(0))
    # every output pixel is either zero padding or some input pixel, and the crop preserves a 3x3 block
    assert set(out.unique().tolist()) <= set(x.unique().tolist()) | {0.0}
