"""Guaranteed deletion for a frozen backbone with a trained head (issue 29).

* `train_head` freezes a backbone and trains a `RidgeHead` (exact deletion by Woodbury downdates) or a
  `CertifiedHead` ((ε, δ)-certified removal: loss perturbation + one Newton step, Guo et al., ICML 2020) on it;
* `HeadModel.delete` removes training points with that guarantee and returns a `HeadDeletion` report saying what
  the guarantee is and whether it covers the whole model (backbone trained on public data) or the head only;
* `save_head` / `load_head` write and read it (through `unlearnkit.jobs.checkpoints` everywhere else).
"""

from __future__ import annotations

from .certified import Budget, CertifiedHead, c_of, commitment
from .files import HEAD_META_KEY, load_head, read_deleted_mask, read_spec, read_trained_mask, save_head
from .linear import embed
from .model import (
    DEFAULTS,
    HEAD_KINDS,
    FeatureBackbone,
    HeadDeletion,
    HeadModel,
    HeadSpec,
    Provenance,
    extract_features,
    train_head,
)
from .ridge import RidgeHead

__all__ = [
    "DEFAULTS",
    "HEAD_KINDS",
    "HEAD_META_KEY",
    "Budget",
    "CertifiedHead",
    "FeatureBackbone",
    "HeadDeletion",
    "HeadModel",
    "HeadSpec",
    "Provenance",
    "RidgeHead",
    "c_of",
    "commitment",
    "embed",
    "extract_features",
    "load_head",
    "read_deleted_mask",
    "read_spec",
    "read_trained_mask",
    "save_head",
    "train_head",
]
