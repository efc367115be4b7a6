"""The checkpoint service: `load_checkpoint` / `save_checkpoint` for every kind of model unlearnkit writes.

A checkpoint is one safetensors file. Its *kind* is read from the file's metadata (and, when saving, from the
model's type) in one place, `checkpoint_kind` / `_kind_of`, using the table `KINDS`:

* ``plain``: one network written by `unlearnkit.models.save_model` (config, role, split digest in metadata);
* ``sisa``: a SISA ensemble written by `unlearnkit.sisa.save_sisa` (members, assignment, deleted mask, spec);
* ``head``: a frozen backbone with a ridge or certified head, written by `unlearnkit.heads.save_head` (backbone
  weights, the head's float64 statistics, trained/deleted masks, spec with the backbone's provenance).

A new kind (e.g. a diffusion model) adds one `CheckpointKind` row: how to recognise its metadata and its model
object, and how to load and save it. The ledger, the ``unlearn`` job and the ``train --shards`` job go through
here, so none of them asks "SISA or plain?" itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError


@dataclass(frozen=True)
class CheckpointKind:
    """How one kind of model is recognised, loaded and saved."""

    name: str
    owns_file: Callable[[Mapping[str, str]], bool]  # from the safetensors metadata
    owns_model: Callable[[Any], bool]
    load: Callable[..., nn.Module]  # (path, *, device, expect) -> model
    save: Callable[[Any, Path, dict[str, str] | None], Path]


def _sisa_meta(meta: Mapping[str, str]) -> bool:
    from ..sisa import SISA_META_KEY

    return SISA_META_KEY in meta


def _is_ensemble(model: Any) -> bool:
    from ..sisa import SISAEnsemble

    return isinstance(model, SISAEnsemble)


def _load_sisa(path: Path, *, device: Any = "cpu", expect: Mapping[str, Any] | None = None) -> nn.Module:
    from ..sisa import load_sisa

    return load_sisa(path, device=device)


def _save_sisa(model: Any, path: Path, extra: dict[str, str] | None) -> Path:
    from ..sisa import save_sisa

    return save_sisa(model, path, extra=extra)


def _load_plain(path: Path, *, device: Any = "cpu", expect: Mapping[str, Any] | None = None) -> nn.Module:
    from ..models import load_model

    return load_model(path, expect=dict(expect) if expect else None, device=device)


def _save_plain(model: Any, path: Path, extra: dict[str, str] | None) -> Path:
    from ..models import save_model

    return save_model(model, path, extra=extra)


def _head_meta(meta: Mapping[str, str]) -> bool:
    from ..heads.files import HEAD_META_KEY

    return HEAD_META_KEY in meta


def _is_head(model: Any) -> bool:
    from ..heads.model import HeadModel

    return isinstance(model, HeadModel)


def _load_head(path: Path, *, device: Any = "cpu", expect: Mapping[str, Any] | None = None) -> nn.Module:
    from ..heads.files import load_head

    model = load_head(path, device=device)
    want = (expect or {}).get("num_classes")
    if want is not None and int(want) != model.spec.num_classes:
        raise CheckpointError(
            f"{path.name} is a head model of {model.spec.num_classes} classes, expected {want}; pass the dataset it "
            "was trained on"
        )
    return model


def _save_head(model: Any, path: Path, extra: dict[str, str] | None) -> Path:
    from ..heads.files import save_head

    return save_head(model, path, extra=extra)


#: Checked in order; the last row (plain) takes every file and model the others do not claim.
KINDS: tuple[CheckpointKind, ...] = (
    CheckpointKind("sisa", _sisa_meta, _is_ensemble, _load_sisa, _save_sisa),
    CheckpointKind("head", _head_meta, _is_head, _load_head, _save_head),
    CheckpointKind("plain", lambda meta: True, lambda model: True, _load_plain, _save_plain),
)


def _file_kind(path: str | os.PathLike) -> CheckpointKind:
    from ..models import read_checkpoint

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    _, meta = read_checkpoint(p)
    return next(k for k in KINDS if k.owns_file(meta))


def _kind_of(model: Any) -> CheckpointKind:
    return next(k for k in KINDS if k.owns_model(model))


def checkpoint_kind(path: str | os.PathLike) -> str:
    """``sisa``, ``head`` or ``plain`` (see `KINDS`) for the checkpoint file at ``path``."""
    return _file_kind(path).name


def model_kind(model: Any) -> str:
    """The checkpoint kind a model object is saved as (see `KINDS`)."""
    return _kind_of(model).name


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device = "cpu", expect: Mapping[str, Any] | None = None
) -> nn.Module:
    """The model stored at ``path``, whatever its kind; ``expect`` (e.g. ``{"num_classes": 10}``) is checked
    against a plain checkpoint's stored config."""
    return _file_kind(path).load(Path(path), device=device, expect=expect)


def save_checkpoint(model: Any, path: str | os.PathLike, *, extra: dict[str, str] | None = None) -> Path:
    """Write ``model`` to ``path`` (atomically) in the format of its kind; ``extra`` goes into the metadata."""
    return _kind_of(model).save(model, Path(path), extra)


def read_deleted_mask(path: str | os.PathLike) -> list[int] | None:
    """The training indices a model file records as deleted (SISA ensembles and head models keep a mask); None
    for a kind without one. Reads that one tensor."""
    from ..heads.files import read_deleted_mask as head_mask
    from ..sisa_files import read_deleted_mask as sisa_mask

    kind = checkpoint_kind(path)
    return sisa_mask(Path(path)) if kind == "sisa" else head_mask(Path(path)) if kind == "head" else None


def deletable_indices(path: str | os.PathLike) -> list[int] | None:
    """The training indices a model file can delete when it restricts them (a head model: the indices its head was
    trained on, not the public split that trained its backbone); None when every training index is deletable."""
    from ..heads.files import read_trained_mask

    return read_trained_mask(Path(path)) if checkpoint_kind(path) == "head" else None


def head_summary(path: str | os.PathLike) -> dict[str, Any] | None:
    """Kind of head, guarantee, what it covers (whole model or head only), backbone provenance and noise
    commitment of a head-model file, from its metadata; None for other kinds."""
    from ..heads.files import read_spec

    if checkpoint_kind(path) != "head":
        return None
    spec = read_spec(Path(path)) or {}
    from ..heads.model import SCOPES

    backbone = spec.get("backbone") or {}
    scope, detail = SCOPES.get(str(backbone.get("trained_on")), ("unknown", "the backbone's provenance is unreadable"))
    out = {
        "head": spec.get("kind"),
        "guarantee": "exact" if spec.get("kind") == "ridge" else f"({spec.get('eps')}, {spec.get('delta')})-certified",
        "scope": scope,
        "scope_detail": detail,
        "backbone": {k: backbone.get(k) for k in ("sha256", "trained_on", "source", "public_split")},
        "lam": spec.get("lam"),
    }
    if spec.get("kind") == "certified":
        out.update(sigma=spec.get("sigma"), eps=spec.get("eps"), delta=spec.get("delta"))
        out["b_commitment"] = spec.get("b_commitment")
    return out


__all__ = [
    "KINDS",
    "CheckpointKind",
    "checkpoint_kind",
    "deletable_indices",
    "head_summary",
    "load_checkpoint",
    "model_kind",
    "read_deleted_mask",
    "save_checkpoint",
]
