import pytest
import torch

from unlearnkit.errors import CheckpointError, ConfigError, UnknownNameError
from unlearnkit.models import create_model, load_model, save_model


@pytest.mark.parametrize(
    ("name", "kw"), [("small_cnn", {}), ("resnet18", {"width": 8}), ("vit_tiny", {"dim": 32, "depth": 1})]
)
@pytest.mark.parametrize("shape", [(1, 28), (3, 32), (1, 8)])
def test_forward_shapes(name, kw, shape):
    c, s = shape
    m = create_model(name, 7, c, s, **kw).eval()
    assert m(torch.rand(2, c, s, s)).shape == (2, 7)
    assert m.forward_features(torch.rand(2, c, s, s)).shape[0] == 2


def test_unknown_model():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet18'"):
        create_model("resnet19", 10)


def test_bad_model_option():
    with pytest.raises(ConfigError, match="bad option"):
        create_model("small_cnn", 10, nonsense=3)


def test_checkpoint_roundtrip(tmp_path):
    m = create_model("small_cnn", 10, 1, 28)
    save_model(m, tmp_path / "m.safetensors")
    n = load_model(tmp_path / "m.safetensors")
    for (k, a), (_, b) in zip(m.state_dict().items(), n.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_wrong_num_classes(tmp_path):
    save_model(create_model("small_cnn", 10, 1, 28), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="num_classes=10"):
        load_model(tmp_path / "m.safetensors", expect={"num_classes": 4})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(tmp_path / "m.safetensors", model=create_model("small_cnn", 4, 1, 28))


def test_checkpoint_wrong_architecture(tmp_path):
    save_model(create_model("small_cnn", 10, 1, 28), tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="name='small_cnn'"):
        load_model(tmp_path / "m.safetensors", expect={"name": "resnet18"})
    with pytest.raises(CheckpointError, match="does not match the model architecture"):
        load_model(tmp_path / "m.safetensors", model=create_model("resnet18", 10, 1, 28, width=8))


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint(tmp_path, damage):
    p = tmp_path / "m.safetensors"
    save_model(create_model("small_cnn", 10, 1, 28), p)
    raw = p.read_bytes()
    p.write_bytes({"truncate": raw[: len(raw) // 2], "garbage": b"\x00not a checkpoint" * 10, "empty": b""}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(p)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope.safetensors")


def test_pt_state_dict_loaded_weights_only(tmp_path):
    m = create_model("small_cnn", 10, 1, 28)
    torch.save(m.state_dict(), tmp_path / "m.pt")
    n = load_model(tmp_path / "m.pt", model=create_model("small_cnn", 10, 1, 28))
    assert torch.equal(n.head.weight, m.head.weight)
