"""The face of the method layer: every public name of the contract, the context and the loop, in one place.

Method files import from here. The code lives by concern:

* `unlearnkit.methods.contract`: `Method`, the configs, `Requirements`, `UnlearnData`, `Batch`, `StepOutput`,
  `Phase`;
* `unlearnkit.methods.context`: `RunContext` and the measurements a run takes through it;
* `unlearnkit.methods.loop`: `GradientMethod`, the shared final loop, its in-run watch and divergence safety;
* `unlearnkit.methods.one_shot`: `OneShotMethod`, the shared prologue of methods that edit the weights once.
"""

from __future__ import annotations

from ..data.datasets import ImageDataset
from .context import NonFiniteLossError, RunContext, frozen_copy, retain_accuracy_sample
from .contract import (
    Batch,
    GradientConfig,
    Method,
    MethodConfig,
    Phase,
    Requirements,
    Source,
    SplitKind,
    StepOutput,
    UnlearnData,
    infer_num_classes,
)
from .loop import (
    DEFAULT_COLLAPSE_FLOOR,
    DEFAULT_MAX_RETAIN_DROP,
    DEFAULT_WEIGHT_DECAY,
    FINAL_LOOP_METHODS,
    GradientMethod,
    resolve_weight_decay,
)
from .one_shot import OneShotMethod

__all__ = [
    "DEFAULT_COLLAPSE_FLOOR",
    "DEFAULT_MAX_RETAIN_DROP",
    "DEFAULT_WEIGHT_DECAY",
    "FINAL_LOOP_METHODS",
    "Batch",
    "GradientConfig",
    "GradientMethod",
    "ImageDataset",
    "Method",
    "MethodConfig",
    "NonFiniteLossError",
    "OneShotMethod",
    "Phase",
    "Requirements",
    "RunContext",
    "Source",
    "SplitKind",
    "StepOutput",
    "UnlearnData",
    "frozen_copy",
    "infer_num_classes",
    "resolve_weight_decay",
    "retain_accuracy_sample",
]
