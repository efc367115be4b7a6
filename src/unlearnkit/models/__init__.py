"""Model registry, factory and safetensors checkpoints.

``create_model(name, num_classes, in_channels, image_size, **kw)`` builds one of our models. The Python API
accepts any torch classifier too; ``timm:<name>`` passes through to timm when it is installed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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
ROLE_KEY = "unlearnkit_role"  # "original" | "retrained" | "unlearned", written by train / run
SPLIT_KEY = "unlearnkit_split_sha256"  # digest of the split the weights were made for
DATASET_KEY = "unlearnkit_dataset"


def create_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered model; its config is kept on ``model.unlearnkit_config`` for checkpoints."""
    if name.startswith("timm:"):
        if not name[5:]:
            raise ConfigError("timm model name is empty; use timm:<name>, e.g. timm:resnet18")
        try:
            import timm
        except ImportError as exc:
            raise MissingDependencyError("timm models need `pip install timm`") from exc
        model = timm.create_model(name[5:], num_classes=num_classes, in_chans=in_channels, **kwargs)
    else:
        builder = MODELS.get(name)
        name = MODELS.canonical(name)
        validate_model_config(
            {
                "name": name,
                "num_classes": num_classes,
                "in_channels": in_channels,
                "image_size": image_size,
                "mean": list(mean) if mean else None,
                "std": list(std) if std else None,
                "kwargs": dict(kwargs),
            }
        )
        try:
            model = builder(
                num_classes=num_classes,
                in_channels=in_channels,
                image_size=image_size,
                mean=list(mean) if mean else None,
                std=list(std) if std else None,
                **kwargs,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad option for model {name!r}: {exc}") from None
    model.unlearnkit_config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "image_size": image_size,
        "mean": list(mean) if mean else None,
        "std": list(std) if std else None,
        "kwargs": dict(kwargs),
    }
    return model


# ------------------------------------------------------------------------------------------------ config schema
LIMITS = {"num_classes": (2, 100_000), "in_channels": (1, 64), "image_size": (1, 1024)}
KWARG_LIMIT = (1, 4096)  # every integer model option (width, hidden, dim, depth, heads, patch_size)
FLOAT_LIMIT = (0.01, 64.0)  # every float model option (mlp_ratio)


def model_options(name: str) -> dict[str, type]:
    """The options of a registered model beyond the dataset-given ones, with their types (from the signature)."""
    import inspect

    builder = MODELS.get(name)
    out: dict[str, type] = {}
    for p in inspect.signature(builder).parameters.values():
        if p.name in ("num_classes", "in_channels", "image_size", "mean", "std", "self"):
            continue
        d = p.default
        out[p.name] = type(d) if isinstance(d, (bool, int, float)) else int  # None defaults are optional ints
    return out


def parse_model_args(name: str, raw: dict[str, str]) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` strings to typed options of model ``name``, with a clear error per bad value."""
    if name.startswith("timm:"):
        return {k: _guess(v) for k, v in raw.items()}
    opts = model_options(name)
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in opts:
            raise ConfigError(
                f"model {MODELS.canonical(name)!r} has no option {k!r}; options: {', '.join(sorted(opts)) or 'none'}"
            )
        t = opts[k]
        try:
            out[k] = float(v) if t is float else int(v)
        except ValueError:
            raise ConfigError(
                f"--model-arg {k}={v!r}: expected {'a number' if t is float else 'an integer'}, "
                f"e.g. {k}={'2.0' if t is float else '16'}"
            ) from None
    validate_kwargs(MODELS.canonical(name), out)
    return out


def _guess(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return v


def validate_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    opts = model_options(name)
    for k, v in kwargs.items():
        if k not in opts:
            raise ConfigError(
                f"bad option for model {name!r}: no option {k!r}; options: {', '.join(sorted(opts)) or 'none'}"
            )
        if v is None:
            continue
        if opts[k] is float:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not FLOAT_LIMIT[0] <= v <= FLOAT_LIMIT[1]:
                raise ConfigError(f"model option {k}={v!r} must be a number in [{FLOAT_LIMIT[0]}, {FLOAT_LIMIT[1]}]")
        elif isinstance(v, bool) or not isinstance(v, int) or not KWARG_LIMIT[0] <= v <= KWARG_LIMIT[1]:
            raise ConfigError(f"model option {k}={v!r} must be an integer in [{KWARG_LIMIT[0]}, {KWARG_LIMIT[1]}]")


def validate_model_config(cfg: Any, *, allow_timm: bool = False, source: str = "model config") -> dict[str, Any]:
    """Check a stored model config (names, ranges, types) before it reaches any constructor."""
    import math

    if not isinstance(cfg, dict):
        raise CheckpointError(f"{source} is not a JSON object")
    name = cfg.get("name")
    if not isinstance(name, str):
        raise CheckpointError(f"{source} has no model name")
    if name.startswith("timm:"):
        if not allow_timm:
            raise CheckpointError(
                f"{source} names the timm model {name!r}; timm models are built only when you ask "
                f"for them (--model {name})"
            )
    elif name not in MODELS:
        raise CheckpointError(f"{source} names an unknown model {name!r}; known: {', '.join(MODELS.names())}")
    for key, (lo, hi) in LIMITS.items():
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"{source}: {key} must be an integer in [{lo}, {hi}], got {v!r}")
    for key in ("mean", "std"):
        v = cfg.get(key)
        if v is None:
            continue
        if (
            not isinstance(v, list)
            or len(v) != cfg["in_channels"]
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)
            or (key == "std" and not all(x > 0 for x in v))
        ):
            raise ConfigError(
                f"{source}: {key} must be a list of {cfg['in_channels']} finite numbers"
                f"{' > 0' if key == 'std' else ''}, got {v!r}"
            )
    kwargs = cfg.get("kwargs", {}) or {}
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{source}: kwargs must be an object, got {kwargs!r}")
    if not name.startswith("timm:"):
        validate_kwargs(MODELS.canonical(name), kwargs)
    return cfg


def checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a checkpoint without building anything: ``config`` (or None), ``role``, ``split_sha256``."""
    p = Path(path)
    meta: dict[str, str] = {}
    if p.suffix not in (".pt", ".pth", ".bin") and p.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                meta = dict(fh.metadata() or {})
        except Exception as exc:
            raise CheckpointError(
                f"checkpoint {p} is corrupt or truncated ({type(exc).__name__}); re-create it or pass another file"
            ) from None
    cfg = None
    if META_KEY in meta:
        try:
            cfg = json.loads(meta[META_KEY])
        except ValueError:
            raise CheckpointError(f"checkpoint {p.name}: its stored model config is not valid JSON") from None
    return {
        "config": cfg,
        "role": meta.get(ROLE_KEY),
        "split_sha256": meta.get(SPLIT_KEY) or None,
        "dataset": meta.get(DATASET_KEY),
    }


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
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a folder; pass the .safetensors file inside it")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if p.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            import pickle

            text = str(exc)
            if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text.lower() or "global" in text.lower():
                raise CheckpointError(
                    f"refused {p.name}: it is a pickle that holds more than tensors, and loading it could run code. "
                    "If you trust it, convert it once to safetensors in a separate Python session "
                    "(safetensors.torch.save_file(state_dict, 'model.safetensors')) and pass that file"
                ) from None
            raise CheckpointError(
                f"cannot read checkpoint {p.name}: not a readable PyTorch state dict "
                f"({type(exc).__name__}); pass a .safetensors file or a state dict saved with "
                "torch.save(model.state_dict(), path)"
            ) from None
        if isinstance(obj, dict) and "state_dict" in obj:
            obj = obj["state_dict"]
        if not isinstance(obj, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
        ):
            raise CheckpointError(f"{p.name} does not hold a state dict (a mapping of names to tensors)")
        return obj, {}
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {p} is corrupt or truncated (or not a safetensors file) "
            f"({type(exc).__name__}); pass an intact .safetensors (or .pt state dict) file"
        ) from None
    return state, meta


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """Strictly load ``state`` into ``model``; a mismatch says which keys or shapes differ."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{'…' if len(unexpected) > 3 else ''}")
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:3]))
        raise CheckpointError(
            f"{source} does not match the model architecture: "
            + ", ".join(parts)
            + ". Use the --model and dataset the checkpoint was trained with."
        )
    model.load_state_dict(state)
    return model


def load_model(
    path: str | os.PathLike,
    *,
    model: nn.Module | None = None,
    expect: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    allow_timm: bool = False,
) -> nn.Module:
    """Load a checkpoint. Without ``model``, the architecture comes from the file's metadata.

    ``expect`` (e.g. ``{"num_classes": 10, "name": "small_cnn", "in_channels": 1, "image_size": 28}``) is checked
    against the stored config before any weight is copied; the stored config is validated against the model schema
    (names, ranges) before it reaches a constructor, and ``timm:`` names are built only with ``allow_timm``.
    """
    state, meta = read_checkpoint(path)
    name = Path(path).name
    cfg = None
    if META_KEY in meta:
        try:
            cfg = json.loads(meta[META_KEY])
        except ValueError:
            raise CheckpointError(f"checkpoint {name}: its stored model config is not valid JSON") from None
        cfg = validate_model_config(
            cfg,
            allow_timm=allow_timm or bool(expect and str(expect.get("name", "")).startswith("timm:")),
            source=f"checkpoint {name}",
        )
    if expect and cfg:
        want = dict(expect)
        if want.get("name") and not str(want["name"]).startswith("timm:") and want["name"] in MODELS:
            want["name"] = MODELS.canonical(want["name"])
        wrong = [f"{k}={cfg.get(k)!r} (expected {v!r})" for k, v in want.items() if v is not None and cfg.get(k) != v]
        if wrong:
            raise CheckpointError(
                f"checkpoint {name} has {', '.join(wrong)}; pass the matching "
                "--model/--dataset or a checkpoint trained for them"
            )
    if model is None:
        if cfg is None:
            raise CheckpointError(
                f"{name} carries no unlearnkit model config; pass --model NAME (with the same "
                "--model-arg values it was trained with) so the architecture can be built, or in "
                "Python build the model yourself and pass it as `model=`"
            )
        model = create_model(
            cfg["name"],
            cfg["num_classes"],
            cfg["in_channels"],
            cfg["image_size"],
            cfg.get("mean"),
            cfg.get("std"),
            **cfg.get("kwargs", {}),
        )
    load_into(model, state, source=f"checkpoint {name}")
    return model.to(device)


__all__ = [
    "DATASET_KEY",
    "MODELS",
    "MODEL_SUMMARIES",
    "ROLE_KEY",
    "SPLIT_KEY",
    "Classifier",
    "Normalize",
    "ResNet18",
    "SmallCNN",
    "TinyViT",
    "checkpoint_info",
    "create_model",
    "load_into",
    "load_model",
    "memory_format",
    "model_config",
    "model_for_dataset",
    "model_options",
    "num_outputs",
    "parse_model_args",
    "read_checkpoint",
    "save_model",
    "validate_model_config",
]
