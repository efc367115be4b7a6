"""The checkpoint service: `load_checkpoint` / `save_checkpoint` for every kind of model unlearnkit writes.

A checkpoint is one safetensors file. Its *kind* is read from the file's metadata (and, when saving, from the
model's type) in one place, `checkpoint_kind` / `_kind_of`, using the table `KINDS`:

* ``plain``: one network written by `unlearnkit.models.save_model` (config, role, split digest in metadata);
* ``sisa``: a SISA ensemble written by `unlearnkit.sisa.save_sisa` (members, assignment, deleted mask, spec).

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


#: Checked in order; the last row (plain) takes every file and model the others do not claim.
KINDS: tuple[CheckpointKind, ...] = (
    CheckpointKind("sisa", _sisa_meta, _is_ensemble, _load_sisa, _save_sisa),
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
    """``sisa`` or ``plain`` (see `KINDS`) for the checkpoint file at ``path``."""
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


__all__ = ["KINDS", "CheckpointKind", "checkpoint_kind", "load_checkpoint", "model_kind", "save_checkpoint"]
