"""unlearnkit: machine unlearning for computer-vision classifiers.

Importing the package is cheap: torch and the submodules load on first use of a public name.

Example:
    >>> import unlearnkit
    >>> sorted(unlearnkit.list_models())[:2]
    ['resnet18', 'small_cnn']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (resolved lazily so `import unlearnkit` stays well under a second)
_LAZY = {
    "load_dataset": "unlearnkit.data",
    "make_split": "unlearnkit.data",
    "split_for": "unlearnkit.data",
    "Split": "unlearnkit.data",
    "parse_forget_spec": "unlearnkit.data",
    "create_model": "unlearnkit.models",
    "load_model": "unlearnkit.models",
    "save_model": "unlearnkit.models",
    "Recipe": "unlearnkit.training",
    "train": "unlearnkit.training",
    "train_or_load": "unlearnkit.oracle",
    "evaluate": "unlearnkit.evaluation",
    "RunInfo": "unlearnkit.evaluation",
    "EvalOptions": "unlearnkit.evaluation",
    "create_method": "unlearnkit.methods",
    "Method": "unlearnkit.methods",
    "unlearn": "unlearnkit.runner",
    "run_method": "unlearnkit.runner",
    "GradientMethod": "unlearnkit.methods",
    "train_head": "unlearnkit.heads",
}
_LISTS = {
    "list_datasets": ("unlearnkit.data", "DATASETS"),
    "list_models": ("unlearnkit.models", "MODELS"),
    "list_methods": ("unlearnkit.methods", "METHODS"),
}

__all__ = ["__version__", *_LAZY, *_LISTS]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _LISTS:
        mod, reg = _LISTS[name]
        registry = getattr(importlib.import_module(mod), reg)
        return registry.names
    if name in ("data", "models", "methods", "evaluation", "training", "oracle", "bench", "jobs", "heads"):
        return importlib.import_module(f"unlearnkit.{name}")
    raise AttributeError(f"module 'unlearnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
