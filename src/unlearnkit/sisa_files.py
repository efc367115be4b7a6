"""SISA ensembles on disk: one safetensors file holding the members, the assignment, the deleted mask and the
spec (`save_sisa`, `is_sisa_checkpoint`, `read_deleted_mask`; `unlearnkit.sisa` re-exports them and holds
`load_sisa`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .sisa import SISAEnsemble

SISA_META_KEY = "unlearnkit_sisa"
_FORMAT = 1


def save_sisa(ens: SISAEnsemble, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    """Write the ensemble (members, assignment, deleted mask) as one safetensors file with its spec."""
    from safetensors.torch import save_file

    from ._io import atomic_write

    state = {k: v.detach().to("cpu").contiguous() for k, v in ens.state_dict().items()}
    meta = dict(extra or {})
    meta[SISA_META_KEY] = json.dumps({"format": _FORMAT, **asdict(ens.spec)})
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def is_sisa_checkpoint(path: str | Path) -> bool:
    from .models import read_checkpoint

    _, meta = read_checkpoint(path)
    return SISA_META_KEY in meta


def read_deleted_mask(path: str | Path) -> list[int] | None:
    """The deleted training indices stored in a SISA checkpoint (reads that one tensor); None for other files."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        if SISA_META_KEY not in (fh.metadata() or {}) or "deleted" not in set(fh.keys()):
            return None
        return torch.nonzero(fh.get_tensor("deleted")).flatten().tolist()
