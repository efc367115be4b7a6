"""The cache service: hashing, verified entries, damaged entries discarded with a warning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.cache import CacheWarning, TensorCache, cache_dir, dataset_digest, model_sha256, tensors_sha256
from unlearnkit.data.datasets import ImageDataset
from unlearnkit.errors import ConfigError


def test_tensors_sha256_is_order_and_layout_independent():
    a = torch.arange(12.0).reshape(3, 4)
    d1 = tensors_sha256({"x": a, "y": torch.ones(2)})
    d2 = tensors_sha256({"y": torch.ones(2), "x": a.t().contiguous().t()})
    assert d1 == d2
    assert d1 != tensors_sha256({"x": a.double(), "y": torch.ones(2)})
    assert d1 != tensors_sha256({"x": a.reshape(4, 3), "y": torch.ones(2)})
    assert d1 != tensors_sha256({"z": a, "y": torch.ones(2)})


def test_model_sha256_and_dataset_digest():
    m = nn.Linear(3, 2)
    assert model_sha256(m) == tensors_sha256(m.state_dict())
    imgs = torch.randint(0, 255, (4, 1, 2, 2), dtype=torch.uint8)
    ds = ImageDataset(imgs, torch.tensor([0, 1, 0, 1]))
    swapped = ImageDataset(imgs, torch.tensor([1, 0, 0, 1]))
    assert dataset_digest(ds) != dataset_digest(swapped)  # labels count


def test_cache_dir_env_and_file(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    f = tmp_path / "file"
    f.write_text("x")
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(f))
    with pytest.raises(ConfigError, match="not a directory"):
        cache_dir()


def test_roundtrip_key_and_meta(tmp_path):
    c = TensorCache("unit", root=tmp_path, version=3)
    k = c.key(a=1, b=[1, 2])
    assert k == c.key(b=[1, 2], a=1) and k != TensorCache("unit", root=tmp_path, version=4).key(a=1, b=[1, 2])
    assert c.load(k) is None
    p = c.save(k, {"w": torch.arange(5.0)}, meta={"note": "hi"})
    assert p == c.path(k) and p.is_file()
    out = c.load(k)
    assert out is not None and torch.equal(out["w"], torch.arange(5.0))
    _, meta = c.load_with_meta(k)
    assert meta["note"] == "hi"
    assert not list(p.parent.glob("*.tmp"))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "flip"])
def test_damaged_entry_is_discarded_with_warning(tmp_path, damage):
    c = TensorCache("unit", root=tmp_path)
    k = c.key(x=damage)
    p = c.save(k, {"w": torch.arange(64.0)})
    raw = bytearray(p.read_bytes())
    if damage == "truncate":
        p.write_bytes(bytes(raw[: len(raw) // 2]))
    elif damage == "garbage":
        p.write_bytes(b"not a safetensors file")
    else:  # overwrite tensor bytes in place, same size: only the hash can tell
        raw[-8:] = b"\x00" * 8
        p.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match=p.name):
        assert c.load(k) is None
    assert not p.exists()
