"""The search space of `unlearnkit.tune`: `Param`, the ``[search]`` table of a method's preset file, grids, and
the check of every value against the method's config before any training (re-exported by `unlearnkit.tune`)."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError
from .methods import METHODS, create_method, load_presets

_SPEC_KEYS = ("low", "high", "log", "step", "choices")


# ------------------------------------------------------------------------------------------------ search space
@dataclass(frozen=True)
class Param:
    """One searched config field: a numeric range (``low``/``high``, optional ``log`` or ``step``) or ``choices``."""

    name: str
    kind: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            step = int(self.step) if self.step is not None else 1
            return trial.suggest_int(self.name, int(self.low or 0), int(self.high or 0), step=step, log=self.log)
        return trial.suggest_float(
            self.name, float(self.low or 0.0), float(self.high or 0.0), step=self.step, log=self.log
        )

    def probe_values(self) -> list[Any]:
        """The values checked against the method's config before any compute (the choices, or both ends)."""
        return list(self.choices) if self.kind == "categorical" else [self.low, self.high]

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def _field_types(method: str) -> dict[str, str]:
    cls = METHODS.get(method)
    return {f.name: str(f.type).replace(" ", "") for f in dataclasses.fields(cls.Config)}


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_search_space(table: Mapping[str, Any], method: str) -> dict[str, Param]:
    """Validate a ``[search]`` table of ``method`` and return its `Param`s; every problem is reported at once.

    Raises `ConfigError` for a field that is not one of the method's config fields, an unknown spec key, a
    range with ``low >= high``, ``log`` with ``low <= 0``, ``log`` together with ``step``, a float range on an
    int field (or a range on a non-numeric field), and empty or non-scalar ``choices``.
    """
    name = METHODS.canonical(method)
    if not isinstance(table, Mapping):
        raise ConfigError(f"[search] of {name} must be a table of field = {{ low, high }} or {{ choices }}")
    types = _field_types(name)
    problems: list[str] = []
    out: dict[str, Param] = {}
    for key, spec in table.items():
        where = f"[search] {name}.{key}"
        if key not in types:
            import difflib

            close = difflib.get_close_matches(key, list(types), n=1, cutoff=0.5)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{where}: {key!r} is not a config field of {name}{hint}")
            continue
        if not isinstance(spec, Mapping):
            problems.append(f"{where}: expected a table {{ low = …, high = … }} or {{ choices = […] }}, got {spec!r}")
            continue
        unknown = [k for k in spec if k not in _SPEC_KEYS]
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(_SPEC_KEYS)}"
            )
            continue
        ftype = types[key]
        if "choices" in spec:
            extra = [k for k in spec if k != "choices"]
            choices = spec["choices"]
            if extra:
                problems.append(f"{where}: choices cannot be combined with {', '.join(extra)}")
            elif isinstance(choices, (str, bytes)) or not isinstance(choices, Sequence) or not choices:
                problems.append(f"{where}: choices must be a non-empty list, got {choices!r}")
            elif not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
                problems.append(f"{where}: choices must be numbers, strings, booleans (lists are not searchable)")
            else:
                out[key] = Param(key, "categorical", choices=tuple(_dedupe(choices)))
            continue
        if "low" not in spec or "high" not in spec:
            problems.append(f"{where}: a range needs both low and high (or give choices = […])")
            continue
        low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
        is_int = ftype.startswith("int")
        if not (is_int or ftype.startswith("float")):
            problems.append(f"{where}: {key} is {ftype}, not a number; search it with choices = […]")
            continue
        if not (_is_num(low) and _is_num(high)):
            problems.append(f"{where}: low and high must be finite numbers, got {low!r}, {high!r}")
            continue
        if is_int and not (isinstance(low, int) and isinstance(high, int)):
            problems.append(f"{where}: {key} is an integer field; low and high must be integers")
            continue
        if not isinstance(log, bool):
            problems.append(f"{where}: log must be true or false, got {log!r}")
            continue
        if low >= high:
            problems.append(f"{where}: low ({low}) must be below high ({high})")
            continue
        if log and low <= 0:
            problems.append(f"{where}: a log range needs low > 0, got {low}")
            continue
        if step is not None:
            if log:
                problems.append(f"{where}: step cannot be combined with log")
                continue
            if not _is_num(step) or step <= 0 or (is_int and not isinstance(step, int)):
                problems.append(f"{where}: step must be a positive {'integer' if is_int else 'number'}, got {step!r}")
                continue
        out[key] = Param(
            key,
            "int" if is_int else "float",
            low=low,
            high=high,
            log=log,
            step=step,
        )
    if problems:
        raise ConfigError("bad search space: " + "; ".join(problems))
    return out


def search_space(method: str) -> dict[str, Param]:
    """The ``[search]`` table of the method's preset file, parsed and validated ({} when it declares none)."""
    return parse_search_space(load_presets(method).get("search", {}), method)


def space_from_grid(grid: Mapping[str, Any], method: str) -> dict[str, Param]:
    """``{"lr": [0.01, 0.05]}`` → a space of choices (the values of ``--grid``)."""
    for k, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(f"grid[{k!r}] must be a non-empty list of values, got {values!r}")
    return parse_search_space({k: {"choices": list(v)} for k, v in grid.items()}, method)


def grid_configs(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in a stable order (the first key varies slowest)."""
    if not grid:
        return [{}]
    for k, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(f"grid[{k!r}] must be a non-empty list of values, got {values!r}")
    keys = list(grid)
    unique = {k: _dedupe(grid[k]) for k in keys}  # a value given twice is run once
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*(unique[k] for k in keys))]


def _dedupe(values: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(v == u and isinstance(v, bool) == isinstance(u, bool) for u in out):
            out.append(v)
    return out


def check_space(
    method: str,
    space: Mapping[str, Param],
    *,
    dataset: str | None = None,
    model: str | None = None,
    kind: str | None = None,
    base: Mapping[str, Any] | None = None,
) -> None:
    """Build the method's config with every choice / both ends of every range (on top of preset and ``base``)."""
    create_method(method, dataset=dataset, model=model, kind=kind, **dict(base or {}))
    for p in space.values():
        for v in p.probe_values():
            try:
                create_method(method, dataset=dataset, model=model, kind=kind, **{**dict(base or {}), p.name: v})
            except ConfigError as exc:
                raise ConfigError(f"search space of {method}: {p.name} = {v!r} is not a valid value: {exc}") from None
