"""Head models on disk: one safetensors file holding the backbone's weights, the head's float64 statistics, the
``trained``/``deleted`` masks and the `HeadSpec` (JSON metadata). Never pickle; never the noise b (only its
commitment). `unlearnkit.heads` re-exports these; the checkpoint service (`unlearnkit.jobs.checkpoints`) calls them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import CheckpointError

if TYPE_CHECKING:
    from .model import HeadModel

HEAD_META_KEY = "unlearnkit_head"
_FORMAT = 1


def save_head(model: HeadModel, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write the head model (atomically) as one safetensors file with its spec in the metadata."""
    from safetensors.torch import save_file

    from .._io import atomic_write

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = dict(extra or {})
    meta[HEAD_META_KEY] = json.dumps({"format": _FORMAT, **asdict(model.spec)})
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def read_spec(path: str | Path) -> dict[str, Any] | None:
    """The stored spec of a head-model file (reads the metadata only); None for other files."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get(HEAD_META_KEY)
    except Exception:
        return None
    if raw is None:
        return None
    try:
        spec = json.loads(raw)
    except ValueError:
        raise CheckpointError(f"{Path(path).name}: its head spec is not valid JSON") from None
    if not isinstance(spec, dict):
        raise CheckpointError(f"{Path(path).name}: its head spec is not a JSON object")
    return spec


def _mask(path: str | Path, name: str) -> list[int] | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        if HEAD_META_KEY not in (fh.metadata() or {}) or name not in set(fh.keys()):
            return None
        return torch.nonzero(fh.get_tensor(name)).flatten().tolist()


def read_deleted_mask(path: str | Path) -> list[int] | None:
    """The deleted training indices stored in a head-model file; None for other files."""
    return _mask(path, "deleted")


def read_trained_mask(path: str | Path) -> list[int] | None:
    """The training indices the head was trained on (its deletable data); None for other files."""
    return _mask(path, "trained")


def load_head(
    path: str | Path, *, device: str | torch.device = "cpu", backbone: Callable[[], nn.Module] | None = None
) -> HeadModel:
    """Load a head model written by `save_head`; ``backbone`` builds a user backbone (one not from
    `unlearnkit.models.create_model`) before its weights are loaded."""
    from ..models import create_model, load_into, read_checkpoint, validate_model_config
    from .certified import CertifiedHead
    from .model import FeatureBackbone, HeadModel, HeadSpec, build_head

    state, meta = read_checkpoint(path)
    name = Path(path).name
    if HEAD_META_KEY not in meta:
        raise CheckpointError(f"{name} is not a head model (no {HEAD_META_KEY} metadata)")
    raw = read_spec(path) or {}
    raw.pop("format", None)
    try:
        spec = HeadSpec(**raw)
        prov = spec.provenance()
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{name}: unreadable head spec ({exc})") from None
    if prov.config is not None:
        c = validate_model_config(prov.config, source=f"the backbone config of {name}")
        inner = create_model(
            c["name"], c["num_classes"], c["in_channels"], c["image_size"], c.get("mean"), c.get("std"), **c["kwargs"]
        )
        bb: nn.Module = FeatureBackbone(inner) if prov.wrapper == "features" else inner
    elif backbone is not None:
        bb = backbone()
        bb = FeatureBackbone(bb) if prov.wrapper == "features" and not isinstance(bb, FeatureBackbone) else bb
    else:
        raise CheckpointError(
            f"{name}: its backbone is a user module; in Python pass load_head(path, backbone=factory) (a zero-argument "
            "function building the same architecture)"
        )
    options: dict[str, Any] = {"lam": spec.lam}
    if spec.kind == "certified":
        options.update(sigma=spec.sigma, eps=spec.eps, delta=spec.delta)
    try:
        head = build_head(spec.kind, spec.num_classes, spec.dim, options)
    except Exception as exc:
        raise CheckpointError(f"{name}: its head spec is invalid ({exc})") from None
    model = HeadModel(bb, head, spec)
    load_into(model, state, source=f"checkpoint {name}")
    if isinstance(head, CertifiedHead):
        head.b_commitment = spec.b_commitment
    return model.to(device).eval()


__all__ = ["HEAD_META_KEY", "load_head", "read_deleted_mask", "read_spec", "read_trained_mask", "save_head"]
