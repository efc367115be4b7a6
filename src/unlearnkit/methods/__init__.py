"""Unlearning methods: one file per method, one registry, presets as TOML beside them.

Each method module registers itself with ``@METHODS.register("name")``; this package imports every
module once, explicitly, so registration is predictable.
"""

from __future__ import annotations

import importlib
import tomllib
from collections.abc import Callable
from importlib import resources
from typing import Any

from ..errors import ConfigError
from ..registry import Registry
from .base import (
    Batch,
    GradientConfig,
    GradientMethod,
    Method,
    MethodConfig,
    OneShotMethod,
    Phase,
    Requirements,
    RunContext,
    StepOutput,
    UnlearnData,
    frozen_copy,
)

METHODS: Registry[type[Method]] = Registry("method")
#: Modules of this package that hold the framework, not a method.
_FRAMEWORK = ("base", "contract", "context", "loop", "one_shot")


def register(name: str, *, aliases: tuple[str, ...] = ()) -> Callable[[type[Method]], type[Method]]:
    """Class decorator: register a `Method` subclass under ``name`` and set ``cls.name``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.register(name, aliases=aliases)(cls)

    return deco


def _load_all() -> None:
    """Import every method module of this package once, in sorted order (a new method is one new file)."""
    import pkgutil

    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if not info.name.startswith("_") and info.name not in _FRAMEWORK:
            importlib.import_module(f"{__name__}.{info.name}")


def get_method_class(name: str) -> type[Method]:
    return METHODS.get(name)


def load_presets(name: str) -> dict[str, Any]:
    """The TOML presets of a method (``presets/<name>.toml``), or {} when it has none."""
    name = METHODS.canonical(name)
    try:
        text = resources.files(__package__).joinpath("presets", f"{name}.toml").read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return tomllib.loads(text)


def preset_config(
    name: str, dataset: str | None = None, model: str | None = None, kind: str | None = None, preset: str | None = None
) -> tuple[dict[str, Any], str]:
    """Config values and their source for (dataset, model, split kind), or a named preset.

    Lookup order: an explicit ``preset`` name; ``[dataset.model.kind]``; ``[dataset.model]``; ``[default]``.
    The ``source`` key of a preset table says where its numbers come from and is not a config field.
    """
    presets = load_presets(name)
    table: dict[str, Any] | None = None
    label = "class defaults"
    node: Any
    if preset is not None:
        node = presets
        for part in preset.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise ConfigError(f"method {name!r} has no preset {preset!r}; presets: {', '.join(_preset_names(presets))}")
        table, label = node, preset
    else:
        for path in ((dataset, model, kind), (dataset, model), ("default",)):
            node = presets
            for key in path:
                node = node.get(key) if isinstance(node, dict) and key is not None else None
            if isinstance(node, dict) and any(not isinstance(v, dict) for v in node.values()):
                table, label = node, ".".join(p for p in path if p)
                break
    if table is None:
        return {}, label
    values = {k: v for k, v in table.items() if not isinstance(v, dict) and k != "source"}
    return values, f"{label} ({table.get('source', 'no source given')})"


def _preset_names(node: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for k, v in node.items():
        if isinstance(v, dict) and not (prefix == "" and k == "search"):  # [search]: the tune search space
            if any(not isinstance(x, dict) for x in v.values()):
                out.append(prefix + k)
            out.extend(_preset_names(v, prefix + k + "."))
    return out


def create_method(
    name: str,
    /,
    *,
    dataset: str | None = None,
    model: str | None = None,
    kind: str | None = None,
    preset: str | None = None,
    **overrides: Any,
) -> Method:
    """Build a registered method: presets for (dataset, model, kind) first, then ``overrides``, validated here."""
    cls = METHODS.get(name)
    values, _ = preset_config(name, dataset, model, kind, preset)
    values.update(overrides)
    return cls(cls.Config.build(values, METHODS.canonical(name)))


def method_table() -> list[dict[str, str]]:
    """Name, summary, requirements and paper of every method (for `unlearnkit list methods`)."""
    rows = []
    for name in METHODS.names():
        cls = METHODS.get(name)
        r = cls.requires
        needs = [n for n, on in (("retain", r.retain), ("original", r.original_model), ("labels", r.labels)) if on]
        needs += [f"{k} model" for k in sorted(r.model_kinds - {"plain"}) if "plain" not in r.model_kinds]
        kinds = "/".join(sorted(r.split_kinds))
        rows.append(
            {
                "name": name,
                "aliases": ",".join(METHODS.aliases_of(name)),
                "summary": cls.summary,
                "requires": "+".join(needs) or "-",
                "forgetting": kinds,
                "paper": cls.paper or "",
            }
        )
    return rows


_load_all()

__all__ = [
    "METHODS",
    "Batch",
    "GradientConfig",
    "GradientMethod",
    "Method",
    "MethodConfig",
    "OneShotMethod",
    "Phase",
    "Requirements",
    "RunContext",
    "StepOutput",
    "UnlearnData",
    "create_method",
    "frozen_copy",
    "get_method_class",
    "load_presets",
    "method_table",
    "preset_config",
    "register",
]
