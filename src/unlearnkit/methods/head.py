"""Deletion from a head model: exact (ridge head) or (ε, δ)-certified (certified head) — `unlearnkit.heads`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import IncompatibleError
from . import register
from .base import Method, MethodConfig, Requirements, RunContext, UnlearnData

if TYPE_CHECKING:
    from ..heads.model import HeadModel


@dataclass(frozen=True, kw_only=True)
class HeadConfig(MethodConfig):
    """Args:
    batch_size: images per backbone pass when computing features.

    The guarantee's own numbers (λ; σ, ε, δ of a certified head) are the head's, set when it was trained
    (``unlearnkit train --head … --head-arg KEY=VALUE``): a deletion must use the very values it was trained with.
    """

    batch_size: int = 512

    def validate(self) -> None:
        super().validate()
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")


@register("head")
class Head(Method):
    """Head-model deletion: a ridge head's exact downdate, or a certified head's Newton removal under its budget.

    Paper:
        Guo, Goldstein, Hannun, van der Maaten, "Certified Data Removal from Machine Learning Models", ICML 2020
        (the certified head; the ridge head is its exact special case for the squared loss).

    The forget set's training indices (``data.split.forget``) must be in the head's deletable data (the indices
    it was trained on) and not deleted yet. A ridge head reads only the forget images (through the frozen
    backbone). A certified head's Newton step reads only them too while its stored Hessian (of the remaining data
    at the current weights) is current; the remaining images it stands on (the retain set's, mapped through
    ``data.split.retain``) are read after the step, to recompute that Hessian at the new weights for the next
    request (or before it, when the stored one is not current, and for a retrain). When a certified request
    would exceed the budget σε/c, the head is retrained on the remaining data with a fresh noise b (recorded). The
    report (guarantee, whole model or head only, bounds and budget) is kept on ``model.last_deletion`` and in
    ``ctx.report["head"]``.

    Requires: a head model (``unlearnkit train --head …``), the split, and for a certified head the retain set.
    """

    Config = HeadConfig
    requires = Requirements(model_kinds=frozenset({"head"}))
    summary = "exact (ridge head) or (ε, δ)-certified (certified head) deletion from a head model"
    paper = "Guo et al., ICML 2020"

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        from ..heads.model import HeadModel, extract_features

        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        if not isinstance(model, HeadModel):
            raise IncompatibleError(
                [
                    "`head` deletes from a head model (a frozen backbone with a ridge or certified head: "
                    "`unlearnkit train --head ridge|certified …`, or unlearnkit.heads.train_head); this is a "
                    f"{type(model).__name__}: pick another method"
                ]
            )
        split = data.split
        if split is None or getattr(split, "forget", None) is None or getattr(split, "retain", None) is None:
            raise IncompatibleError(
                ["`head` needs the training indices of the forget and retain sets (UnlearnData.split)"]
            )
        forget = np.asarray(split.forget, dtype=np.int64)
        idx = model.check_indices(forget.tolist())  # refused before any compute: public, deleted, out of range
        order = np.argsort(forget, kind="stable")
        bs = self.config.batch_size
        ctx.emit("setup_end")
        t0 = time.perf_counter()
        x_del, y_del = extract_features(model.backbone, data.forget, device=ctx.device, batch_size=bs)
        x_del, y_del = x_del[torch.as_tensor(order)], y_del[torch.as_tensor(order)]
        rest = self._remaining(model, idx, split, data) if model.spec.kind == "certified" else None

        def remaining() -> tuple[torch.Tensor, torch.Tensor]:  # read only when the certified head needs them
            assert rest is not None
            return extract_features(model.backbone, rest, device=ctx.device, batch_size=bs)

        report = model.delete_embedded(
            idx, x_del, y_del, remaining=remaining, refresh=True, feature_seconds=time.perf_counter() - t0
        )
        ctx.report["head"] = report.to_dict()
        ctx.report["guarantee"] = f"{model.spec.kind} head deletion (exact, certified or a retrain without the data)"
        ctx.log(deleted=float(report.deleted), head_seconds=report.seconds)
        return model.eval()

    @staticmethod
    def _remaining(model: HeadModel, idx: list[int], split: Any, data: UnlearnData) -> Dataset:
        """The retain-set images of the points the head keeps standing on, in training-index order."""
        keep = model.remaining()
        keep = keep[~torch.isin(keep, torch.as_tensor(idx))]
        retain = np.asarray(split.retain, dtype=np.int64)
        position = torch.full((model.spec.num_train,), -1, dtype=torch.long)
        position[torch.as_tensor(retain)] = torch.arange(len(retain))
        pos = position[keep]
        if (pos < 0).any():
            missing = keep[pos < 0][:5].tolist()
            raise IncompatibleError(
                [f"training indices {missing} are kept by the head but are in neither the forget nor the retain set"]
            )
        assert data.retain is not None
        sub = getattr(data.retain, "subset", None)
        return sub(pos.numpy()) if callable(sub) else torch.utils.data.Subset(data.retain, pos.tolist())
