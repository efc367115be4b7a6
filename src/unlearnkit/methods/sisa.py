"""SISA deletion: retrain only the affected shards of a `SISAEnsemble` from their last clean checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..errors import IncompatibleError
from . import register
from .base import Method, Requirements, RunContext, UnlearnData
from .retrain import Retrain, RetrainConfig


@dataclass(frozen=True, kw_only=True)
class SISAConfig(RetrainConfig):
    """The recipe fields matter only for a plain (non-SISA) model, a SISA model with one shard and one slice.

    A `unlearnkit.sisa.SISAEnsemble` always retrains with the recipe stored in it (exactness needs the very
    recipe it was trained with).
    """


@register("sisa")
class SISA(Method):
    """SISA (exact): delete the forget set from a sharded, sliced ensemble by retraining only its shards.

    Paper:
        Bourtoule et al., "Machine Unlearning", IEEE S&P 2021 (methods.md §13.1).

    For a `unlearnkit.sisa.SISAEnsemble`: the forget set's training indices (``data.split.forget``) are marked
    deleted; each shard holding one restarts from the checkpoint taken before the earliest affected slice and
    re-runs the later stages on the reduced slices (data read from ``data.retain`` through
    ``data.split.retain``). Other shards are untouched. The cost is logged (``samples_processed``,
    ``sample_fraction``, ``wall_fraction``) and kept on ``model.last_deletion``.

    A plain model is a SISA model with one shard and one slice whose only checkpoint is its initialisation:
    it is retrained from scratch on the retain set with the config's recipe (exactly `retrain`).

    Requires: the retain set and, for an ensemble, the split (training indices of forget and retain).
    """

    Config = SISAConfig
    requires = Requirements(model_kinds=frozenset({"plain", "sisa"}))
    summary = "SISA exact unlearning: retrain only the affected shards from their last checkpoint"
    paper = "Bourtoule et al., IEEE S&P 2021"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        from ..sisa import SISAEnsemble, delete_indices

        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        if not isinstance(model, SISAEnsemble):
            return Retrain(RetrainConfig(**self.config.to_dict())).unlearn(model, data, ctx)
        split = data.split
        if split is None or getattr(split, "forget", None) is None or getattr(split, "retain", None) is None:
            raise IncompatibleError(
                ["`sisa` needs the training indices of the forget and retain sets (UnlearnData.split)"]
            )
        forget = np.asarray(split.forget, dtype=np.int64)
        retain = np.asarray(split.retain, dtype=np.int64)
        assert data.retain is not None
        position = torch.full((model.num_train,), -1, dtype=torch.long)
        position[torch.as_tensor(retain)] = torch.arange(len(retain))
        retain_set: Dataset = data.retain

        def data_for(idx: torch.Tensor) -> Dataset:
            pos = position[idx]
            if (pos < 0).any():
                missing = idx[pos < 0][:5].tolist()
                raise IncompatibleError(
                    [f"training indices {missing} are kept by the ensemble but are in neither forget nor retain"]
                )
            sub = getattr(retain_set, "subset", None)
            return sub(pos.numpy()) if callable(sub) else Subset(retain_set, pos.tolist())

        ctx.emit("setup_end")
        report = delete_indices(model, data_for, forget.tolist(), device=ctx.device, augment=data.augment)
        ctx.log(
            samples_processed=float(report.samples_processed),
            sample_fraction=report.sample_fraction,
            shards_retrained=float(len(report.shards)),
        )
        return model.eval()
