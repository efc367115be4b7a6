"""Retrain (RT): the exact gold standard, a fresh network trained on the retain set only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import nn

from ..training import Recipe, train
from . import register
from ._common import reinitialize_
from .base import MethodConfig, RunContext, UnlearnData
from .one_shot import OneShotMethod


@dataclass(frozen=True, kw_only=True)
class RetrainConfig(MethodConfig):
    """The training recipe of the retrained model (fields as in `unlearnkit.training.Recipe`).

    Defaults are the OPTML/authors' CIFAR-10 recipe (methods.md §1.1): 182 epochs, SGD 0.1 / 0.9 / 5e-4,
    batch 256, cosine, with augmentation. For a dataset with a measured default recipe, the presets use the
    recipe of the original model, so the retrained model is comparable with it.
    """

    epochs: int = 182
    batch_size: int = 256
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    augment: bool = True
    label_smoothing: float = 0.0

    def validate(self) -> None:
        super().validate()
        self.recipe()  # Recipe checks every field and raises ConfigError

    def recipe(self) -> Recipe:
        return Recipe(**self.to_dict())


@register("retrain", aliases=("rt",))
class Retrain(OneShotMethod[None]):
    """Retrain from scratch on the retain set: by definition it never saw the forget set.

    Paper: the exact-unlearning baseline of every approximate method (methods.md §1.1).

    Re-initialises the given architecture (``reset_parameters`` of every module, seeded by the run's seed) and
    minimises ``L_{D_r}(θ)`` with the training recipe in the config, via `unlearnkit.training.train`.

    Args:
        epochs, batch_size, optimizer, lr, momentum, weight_decay, schedule, augment, label_smoothing: the
            recipe (defaults: 182 epochs, batch 256, SGD lr 0.1, momentum 0.9, wd 5e-4, cosine, augmentation).

    Requires: the retain set (neither the original weights nor the forget set are used).
    """

    Config = RetrainConfig
    summary = "retrain from scratch on the retain set (gold standard)"
    paper = "exact unlearning baseline"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 32}

    def edit(self, model: nn.Module, data: UnlearnData, prepared: None, ctx: RunContext) -> nn.Module:
        reinitialize_(model, ctx.seed)
        assert data.retain is not None  # requires.retain, checked above
        train(
            model,
            data.retain,
            self.config.recipe(),
            seed=ctx.seed,
            augment=data.augment,
            device=ctx.device,
            progress=ctx.progress,
            desc="retrain",
        )
        ctx.log(epochs=self.config.epochs)
        return model
