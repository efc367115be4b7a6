"""Model registry, factory and safetensors checkpoints.

``create_model(name, num_classes, in_channels, image_size, **kw)`` builds one of our models. The Python API
accepts any torch classifier too; ``timm:<name>`` passes through to timm when it is installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._io import atomic_write
from ..errors import CheckpointError, ConfigError, MissingDependencyError
from ..registry import Registry
from ._common import Classifier, Normalize
from .resnet import ResNet18
from .small_cnn import SmallCNN
from .vit import TinyViT

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.register("small_cnn", aliases=("smallcnn",))(SmallCNN)
MODELS.register("resnet18", aliases=("resnet18_cifar",))(ResNet18)
MODELS.register("vit_tiny", aliases=("tiny_vit",))(TinyViT)

MODEL_SUMMARIES = {
    "small_cnn": "3 conv blocks (BatchNorm) + 2-layer head; the fast default",
    "resnet18": "CIFAR-style ResNet-18 (3×3 stem, no max-pool), `width` knob (default 64)",
    "vit_tiny": "tiny ViT: patch 4, dim 64, depth 4, 4 heads; attention/MLP as nn.Linear",
}

META_KEY = "unlearnkit_model"


def create_model(name: str, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model; its config is kept on ``model.unlearnkit_config`` for checkpoints."""
    if name.startswith("timm:"):
        try:
            import timm  # type: ignore[import-not-found]
        except ImportError as exc:
            raise MissingDependencyError("timm models need `pip install timm`") from exc
        model = timm.create_model(name[5:], num_classes=num_classes, in_chans=in_channels, **kwargs)
    else:
        builder = MODELS.get(name)
        name = MODELS.canonical(name)
        if num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
        try:
            model = builder(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                            mean=list(mean) if mean else None, std=list(std) if std else None, **kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad option for model {name!r}: {exc}") from None
    model.unlearnkit_config = {"name": name, "num_classes": num_classes, "in_channels": in_channels,  # type: ignore[assignment]
                               "image_size": image_size, "mean": list(mean) if mean else None,
                               "std": list(std) if std else None, "kwargs": dict(kwargs)}
    return model


def model_for_dataset(name: str, info: Any, **kwargs: Any) -> nn.Module:
    """`create_model` with num_classes, channels, size and normalisation from a `DatasetInfo`."""
    return create_model(name, info.num_classes, info.channels, info.image_size, info.mean, info.std, **kwargs)


def memory_format(model: nn.Module) -> torch.memory_format:
    """channels_last for our convolutional models (1.4–3× faster on CPU), else the default layout.

    Only our own `Classifier`s opt in: a user's model may ``view`` its input, which needs the default layout.
    """
    if isinstance(model, Classifier) and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return torch.channels_last
    return torch.contiguous_format


def model_config(model: nn.Module) -> dict[str, Any] | None:
    return getattr(model, "unlearnkit_config", None)


def num_outputs(model: nn.Module) -> int | None:
    cfg = model_config(model)
    if cfg:
        return int(cfg["num_classes"])
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def save_model(model: nn.Module, path: str | os.PathLike, extra: dict[str, str] | None = None) -> Path:
    """Write the weights as safetensors (atomically), with the model config in the file's metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = dict(extra or {})
    cfg = model_config(model)
    if cfg is not None:
        meta[META_KEY] = json.dumps(cfg)
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) of a safetensors file, or a `.pt` state dict loaded with ``weights_only=True``."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is unusable
            raise CheckpointError(f"cannot read checkpoint {p}: {exc}") from exc
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise CheckpointError(f"{p} does not hold a state dict")
        return obj, {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise CheckpointError(f"checkpoint {p} is corrupt or truncated ({type(exc).__name__}: {exc}); "
                              "re-create it with `unlearnkit train` or `unlearnkit run`") from exc
    return state, meta


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load ``state`` into ``model``; a mismatch says which keys or shapes differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:3]))
        raise CheckpointError(f"{source} does not match the model architecture: " + ", ".join(parts) +
                              ". Use the --model and dataset the checkpoint was trained with.")
    model.load_state_dict(state)
    return model


def load_model(path: str | os.PathLike, *, model: nn.Module | None = None, expect: dict[str, Any] | None = None,
               device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint. Without ``model``, the architecture comes from the file's metadata.

    ``expect`` (e.g. ``{"num_classes": 10, "name": "small_cnn"}``) is checked against the stored config before
    any weight is copied.
    """
    state, meta = read_checkpoint(path)
    cfg = json.loads(meta[META_KEY]) if META_KEY in meta else None
    if expect and cfg:
        wrong = [f"{k}={cfg.get(k)!r} (expected {v!r})" for k, v in expect.items() if v is not None and cfg.get(k) != v]
        if wrong:
            raise CheckpointError(f"checkpoint {Path(path).name} has {', '.join(wrong)}; pass the matching "
                                  "--model/--dataset or a checkpoint trained for them")
    if model is None:
        if cfg is None:
            raise CheckpointError(f"{Path(path).name} carries no unlearnkit model config; build the model yourself "
                                  "and pass it as `model=`")
        model = create_model(cfg["name"], cfg["num_classes"], cfg["in_channels"], cfg["image_size"], cfg.get("mean"),
                             cfg.get("std"), **cfg.get("kwargs", {}))
    load_into(model, state, source=f"checkpoint {Path(path).name}")
    return model.to(device)


__all__ = ["MODELS", "MODEL_SUMMARIES", "Classifier", "Normalize", "ResNet18", "SmallCNN", "TinyViT",
           "create_model", "load_into", "load_model", "memory_format", "model_config", "model_for_dataset", "num_outputs",
           "read_checkpoint", "save_model"]
