"""SCRUB: alternate max-steps (away from the teacher on D_f) and min-steps (close to it on D_r)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.loading import as_image_dataset
from ..errors import ConfigError
from ..training import accuracy
from . import register
from .base import Batch, GradientConfig, GradientMethod, Phase, Requirements, RunContext, StepOutput, UnlearnData


def kl_teacher_student(teacher_logits: torch.Tensor, student_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """``KL_τ(T‖S) = τ² · (1/B) Σ_b Σ_k p_T^τ (log p_T^τ − log p_S^τ)``, the SCRUB distillation term."""
    log_t = F.log_softmax(teacher_logits / tau, dim=1)
    log_s = F.log_softmax(student_logits / tau, dim=1)
    return (tau**2) * (log_t.exp() * (log_t - log_s)).sum() / len(student_logits)


@dataclass(frozen=True, kw_only=True)
class ScrubConfig(GradientConfig):
    """Hyper-parameters of `Scrub` (defaults: the official large-scale notebook run).

    The batch sizes are the ones the notebook's ``train_distill`` calls actually used: forget 512, retain 256
    (its loaders, cell 28); the ``del_batch_size=32`` / ``sgda_batch_size=128`` variables it also sets are never
    read. ``rewind`` None follows methods.md §9: SCRUB+R for random forgetting when held-out data
    (``data.test``) is given, off for class-wise forgetting.
    """

    epochs: int = 3
    lr: float = 5e-4
    batch_size: int = 256
    forget_batch_size: int = 512
    msteps: int = 2
    alpha: float = 0.001
    gamma: float = 0.99
    temperature: float = 4.0
    lr_milestones: tuple[int, ...] = (3, 5, 9)
    lr_decay: float = 0.1
    rewind: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.lr_milestones, tuple):  # TOML and JSON give lists
            ms = self.lr_milestones
            if isinstance(ms, str):
                ms = [int(p) for p in ms.replace("[", "").replace("]", "").split(",") if p.strip()]
            object.__setattr__(self, "lr_milestones", tuple(int(m) for m in ms))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        self.check(self.msteps >= 0, f"msteps must be ≥ 0, got {self.msteps}")
        self.check(self.forget_batch_size >= 1, f"forget_batch_size must be ≥ 1, got {self.forget_batch_size}")
        self.check(self.alpha >= 0 and self.gamma >= 0, f"alpha and gamma must be ≥ 0, got {self.alpha}, {self.gamma}")
        self.check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        self.check(0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}")


@register("scrub")
class Scrub(GradientMethod):
    """SCRUB: a student that moves away from the original teacher on D_f and stays close to it on D_r.

    Paper:
        Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023, https://arxiv.org/abs/2302.09880

    Teacher = the frozen original, student initialised from it (train mode). Epoch ``e`` (counted from 1)
    runs a pass over ``D_f`` with max-steps ``−KL_τ(T‖S)`` if ``e ≤ msteps``, then a pass over ``D_r`` with
    min-steps ``γ · CE(S(x), y) + α · KL_τ(T‖S)``; one SGD optimizer is shared, and the lr is multiplied by
    ``lr_decay`` for every milestone ``m`` with ``e > m``. ``KL_τ`` is summed over classes, divided by the
    batch size and scaled by ``τ²``. With ``rewind`` (SCRUB+R), the per-epoch checkpoint whose forget error is
    closest to the final model's error on held-out data (``data.test``; its forget classes for class-wise
    splits) is returned. The SGDA smoothing term of the paper is not implemented (its default weight is 0).

    Args:
        msteps: number of epochs with max-steps (2).
        alpha: α, weight of the KL term in min-steps (0.001).
        gamma: γ, weight of the cross-entropy in min-steps (0.99).
        temperature: τ of the distillation softmax (4).
        forget_batch_size: batch size of max-steps (512); ``batch_size`` is the retain batch size (256): what
            the official notebook run used.
        lr_milestones, lr_decay: step decay of the lr ((3, 5, 9), 0.1).
        rewind: SCRUB+R checkpoint selection (needs ``data.test``). None (default): on for random forgetting
            when ``data.test`` is given (methods.md §9), off for class-wise forgetting; True / False force it.
        epochs, lr, momentum, weight_decay: SGD (3, 5e-4, 0.9, the original's weight decay else 5e-4).

    Requires:
        the original model (teacher) and a retain set with labels.

    Example:
        >>> import unlearnkit
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> d = tiny_data()
        >>> out = unlearnkit.unlearn(tiny_model(trained=True), d.forget, d.retain, method="scrub", epochs=1,
        ...                          device="cpu")
        >>> out.head.out_features
        4
    """

    Config: ClassVar[type[ScrubConfig]] = ScrubConfig
    requires: ClassVar[Requirements] = Requirements(original_model=True)
    paper: ClassVar[str | None] = (
        "Towards Unbounded Machine Unlearning (NeurIPS 2023), https://arxiv.org/abs/2302.09880"
    )
    summary: ClassVar[str] = "alternate max-steps away from the original on D_f and min-steps towards it on D_r"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 2, "msteps": 1, "forget_batch_size": 16, "batch_size": 32}
    guard_divergence: ClassVar[bool] = True

    # --- schedule ---------------------------------------------------------------------------------
    def schedule(self) -> Iterable[Phase]:
        c = self.config
        for epoch in range(1, c.epochs + 1):
            if epoch <= c.msteps:
                yield Phase("max", "forget", batch_size=c.forget_batch_size, epoch=epoch)
            yield Phase("min", "retain", epoch=epoch)

    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        assert ctx.original is not None  # requires.original_model, checked before setup
        self.teacher_: nn.Module = ctx.original
        # SCRUB+R: held-out reference data checked before any update; a checkpoint after every full epoch.
        self.rewind_ref_ = self._rewind_reference(data) if self.rewinds(data) else None
        self.checkpoints_: list[dict[str, torch.Tensor]] = []

    def lr_at(self, step: int, total: int, epoch: int) -> float:
        c = self.config
        if c.schedule == "cosine":
            return super().lr_at(step, total, epoch)
        passed = sum(1 for m in c.lr_milestones if epoch > m)
        return c.lr * c.lr_decay**passed

    # --- losses -----------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> StepOutput:
        tau = self.config.temperature
        if phase.name == "max":
            x, _ = batch.forget  # type: ignore[misc]
            with torch.no_grad():
                t = self.teacher_(x)
            kl = kl_teacher_student(t, model(x), tau)
            return StepOutput(-kl, {"forget_kl": kl.detach()})
        c = self.config
        x, y = batch.retain  # type: ignore[misc]
        with torch.no_grad():
            t = self.teacher_(x)
        s = model(x)
        ce, kl = F.cross_entropy(s, y), kl_teacher_student(t, s, tau)
        return StepOutput(c.gamma * ce + c.alpha * kl, {"retain_ce": ce.detach(), "retain_kl": kl.detach()})

    # --- SCRUB+R ----------------------------------------------------------------------------------
    def on_epoch_end(self, model: nn.Module, phase: Phase, ctx: RunContext) -> None:
        if self.rewind_ref_ is not None and phase.name == "min":  # the end of a full epoch
            self.checkpoints_.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    def finalize(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> nn.Module:
        if self.rewind_ref_ is not None:
            self._rewind(model, data, self.rewind_ref_, ctx)
        return model

    def rewinds(self, data: UnlearnData) -> bool:
        """Whether this run uses SCRUB+R: ``rewind`` when set, else random forgetting with held-out data."""
        rewind = self.config.rewind
        if rewind is not None:
            return bool(rewind)
        return data.split_kind == "random" and data.test is not None and len(data.test) > 0  # type: ignore[arg-type]

    @staticmethod
    def _rewind_reference(data: UnlearnData) -> Any:
        if data.test is None or len(data.test) == 0:  # type: ignore[arg-type]
            raise ConfigError(
                "scrub rewind=true needs held-out data from the forget distribution (data.test); "
                "pass test=… (Python) or set rewind=false (CLI: --set rewind=false)"
            )
        test = as_image_dataset(data.test)
        classes = data.forget_classes
        if data.split_kind == "class" and classes:
            keep = np.flatnonzero(np.isin(test.targets.numpy(), classes))
            if len(keep) == 0:
                raise ConfigError(f"scrub rewind=true: the test set has no images of the forget classes {classes}")
            test = test.subset(keep)
        return test

    def _rewind(self, model: nn.Module, data: UnlearnData, ref_set: Any, ctx: RunContext) -> None:
        device = next(model.parameters()).device
        e_ref = 100.0 - accuracy(model, ref_set, device=device)
        final = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best, best_gap, best_i = final, math.inf, len(self.checkpoints_)
        for i, state in enumerate([*self.checkpoints_, final]):
            model.load_state_dict(state)
            gap = abs((100.0 - accuracy(model, data.forget, device=device)) - e_ref)
            if gap < best_gap:
                best, best_gap, best_i = state, gap, i
        model.load_state_dict(best)
        model.eval()
        ctx.log(rewind_epoch=best_i + 1, rewind_reference_error=e_ref)


__all__ = ["Scrub", "ScrubConfig", "kl_teacher_student"]
