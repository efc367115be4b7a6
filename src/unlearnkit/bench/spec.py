"""Bench specs: a TOML grid of datasets × models × forget specs × methods × seeds, validated up front.

A spec looks like this::

    name = "fashion_mnist"              # optional, shown in the report
    description = "…"                   # optional
    metrics = ["mia_efficacy_forget"]   # optional: extra metrics/audits for every run
    audits = "standard"                 # optional: none | standard (default) | strong, or audit names
    oracles = 4                         # optional: K ≥ 3 retrained oracles per split (oracle-margin score)

    [grid]
    datasets = ["fashion_mnist"]
    models = ["small_cnn"]
    forget = ["class:0", "random:0.1"]
    seeds = [0, 1, 2]
    manipulations = ["none", "badnets:rate=0.05,value=1"]   # optional: training-data manipulations (§5, §4.5)

    [model_args.resnet18]               # optional keyword arguments of one model
    width = 16

    [resources]                         # optional: what each run declares to the Ray executor (--executor ray)
    num_cpus = 1                        #   (default 1); --num-cpus / --num-gpus override these
    num_gpus = 0                        #   (default 0; a run with num_gpus > 0 lands only on a GPU node)

    [[methods]]
    name = "salun"
    set = { lr = 0.01 }                 # optional config overrides (on top of the method's presets)
    label = "salun-lr0.01"              # optional; default: the name, plus the overrides when there are some

`load_spec` collects every problem (unknown keys, unknown names, wrong types, malformed forget specs, empty
grid, bad method options) and raises one `ConfigError` listing them, one per line, before any compute.
`plan_runs` expands the grid; each run carries a run key, the SHA-256 of (dataset, model, model_args, forget
spec, method name, resolved overrides, seed, and the manipulation when there is one), which is what makes a bench
resumable. ``poisoned`` forget specs run only on manipulated data (skipped, with the reason, on ``none``).
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import sha256_json
from ..errors import ConfigError
from .runners import resolve_runner

TOP_KEYS = (
    "name",
    "description",
    "metrics",
    "audits",
    "oracles",
    "runner",
    "grid",
    "model_args",
    "methods",
    "resources",
)
RESOURCE_KEYS = ("num_cpus", "num_gpus")
GRID_KEYS = ("datasets", "models", "forget", "seeds")
OPTIONAL_GRID_KEYS = ("manipulations",)
METHOD_KEYS = ("name", "set", "label")
_SCALARS = (str, int, float, bool)


@dataclass(frozen=True)
class MethodEntry:
    """One ``[[methods]]`` table: a registered method, its config overrides and its label in reports."""

    name: str  # canonical registry name
    overrides: dict[str, Any]  # resolved (type-coerced) overrides, sorted by key
    label: str


@dataclass(frozen=True)
class ForgetEntry:
    """One forget spec of the grid: the canonical text (for keys and reports) and what the runner receives."""

    spec: str  # canonical, e.g. "class:0", "random:0.1", "indices:500@1a2b…" (no paths)
    arg: str  # passed to run_experiment (indices files as absolute paths)
    kind: str  # "class" or "random" (index files count as random forgetting)


@dataclass(frozen=True)
class BenchSpec:
    """A validated bench spec (see the module docstring for the TOML form)."""

    datasets: tuple[str, ...]
    models: tuple[str, ...]
    forget: tuple[ForgetEntry, ...]
    seeds: tuple[int, ...]
    methods: tuple[MethodEntry, ...]
    model_args: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None
    name: str = ""
    description: str = ""
    runner: str | None = None  # hidden: name of a registered runner (plugin entry point) replacing run_experiment
    source_text: str = ""  # the TOML as given (copied into the bench folder)
    manipulations: tuple[str | None, ...] = (None,)  # canonical manipulation specs; None = the clean data
    audits: str | None = None  # audit level / names of every run (None: the runner's default, standard)
    oracles: int = 0  # K retrained oracles per split for the oracle-distribution score (0: none)
    resources: dict[str, float] = field(default_factory=dict)  # per-run num_cpus / num_gpus for the Ray executor


@dataclass(frozen=True)
class Run:
    """One cell of the grid."""

    dataset: str
    model: str
    model_args: dict[str, Any]
    forget: ForgetEntry
    method: MethodEntry
    seed: int
    key: str
    skip_reason: str | None = None
    manipulation: str | None = None

    @property
    def title(self) -> str:
        on = f" on {self.manipulation}" if self.manipulation else ""
        return f"{self.dataset}/{self.model} {self.forget.spec}{on} {self.method.label} seed {self.seed}"

    def describe(self) -> dict[str, Any]:
        """The JSON block stored with the record (``record["bench"]``) and in ``bench.json``."""
        return {
            "run_key": self.key,
            "dataset": self.dataset,
            "model": self.model,
            "model_args": self.model_args,
            "forget": self.forget.spec,
            "method": self.method.name,
            "label": self.method.label,
            "overrides": self.method.overrides,
            "seed": self.seed,
            **({"manipulation": self.manipulation} if self.manipulation else {}),
        }


def run_key(
    dataset: str,
    model: str,
    model_args: Mapping[str, Any],
    forget: str,
    method: str,
    overrides: Mapping[str, Any],
    seed: int,
    manipulation: str | None = None,
) -> str:
    """SHA-256 identifying one run; labels and spec order do not enter it (nor an absent manipulation)."""
    return sha256_json(
        {
            "dataset": dataset,
            "model": model,
            "model_args": dict(sorted(model_args.items())),
            "forget": forget,
            "method": method,
            "overrides": dict(sorted(overrides.items())),
            "seed": int(seed),
            **({"manipulation": manipulation} if manipulation else {}),
        }
    )


# ------------------------------------------------------------------------------------------------ loading
def load_spec(path: str | os.PathLike) -> BenchSpec:
    """Read and validate a bench spec file; raise one `ConfigError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"bench spec {str(path)!r} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read bench spec {str(path)!r}: {exc}") from None
    return parse_spec(text, base_dir=path.parent, origin=str(path))


def parse_spec(text: str, *, base_dir: str | os.PathLike = ".", origin: str = "<spec>") -> BenchSpec:
    """Validate TOML text as a bench spec (relative ``indices:`` files are read from ``base_dir``)."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bench spec {origin} is not valid TOML: {exc}") from None
    problems: list[str] = []
    spec = _validate(raw, Path(base_dir), problems, text)
    if problems or spec is None:
        err = ConfigError(
            f"bench spec {origin} has {len(problems)} problem{'s' if len(problems) != 1 else ''}:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
        err.problems = problems  # type: ignore[attr-defined]
        raise err
    return spec


def _unknown(keys: Any, allowed: tuple[str, ...], where: str, problems: list[str]) -> None:
    for k in keys:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), allowed, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; allowed: {', '.join(allowed)}"
            problems.append(f"{where}: unknown key {k!r}{hint}")


def _str_list(value: Any, where: str, problems: list[str]) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(f'{where}: expected a list of strings, e.g. ["a", "b"], got {_show(value)}')
        return None
    if not value:
        problems.append(f"{where}: is empty; the grid needs at least one entry")
        return None
    dup = sorted({v for v in value if value.count(v) > 1})
    if dup:
        problems.append(f"{where}: repeated {', '.join(map(repr, dup))}")
    return list(dict.fromkeys(value))


def _show(value: Any) -> str:
    kind = {
        dict: "a table",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} ({text if len(text) < 40 else text[:37] + '...'})"


def _canonical(registry: Any, name: str, where: str, problems: list[str]) -> str | None:
    from ..errors import UnknownNameError

    try:
        return registry.canonical(name)
    except UnknownNameError as exc:
        problems.append(f"{where}: {exc}")
        return None


def _validate(raw: dict[str, Any], base_dir: Path, problems: list[str], text: str) -> BenchSpec | None:
    from ..data import DATASETS
    from ..models import MODELS

    _unknown(raw, TOP_KEYS, "spec", problems)
    name = raw.get("name", "")
    description = raw.get("description", "")
    for key, value in (("name", name), ("description", description)):
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {_show(value)}")

    runner = raw.get("runner")
    if runner is not None:
        if not isinstance(runner, str):
            problems.append(f"runner: expected the name of a registered runner, got {_show(runner)}")
            runner = None
        else:
            try:
                resolve_runner(runner)
            except ConfigError as exc:
                problems.append(f"runner: {exc}")

    audits = raw.get("audits")
    if audits is not None and not isinstance(audits, str):
        problems.append(
            f"audits: expected a level (none, standard, strong) or comma-separated names, got {_show(audits)}"
        )
        audits = None
    oracles = raw.get("oracles", 0)
    try:
        check_audits(audits, oracles)
    except ConfigError as exc:
        problems.append(f"audits/oracles: {exc}")
    metrics = None
    if "metrics" in raw:
        metrics = _str_list(raw["metrics"], "metrics", problems)
        if metrics:
            _check_metrics(metrics, problems)

    # --- grid -----------------------------------------------------------------------------------------
    grid = raw.get("grid")
    datasets: list[str] = []
    models: list[str] = []
    forget: list[ForgetEntry] = []
    seeds: list[int] = []
    manipulations: list[str | None] = [None]
    if grid is None:
        problems.append("grid: missing; add a [grid] table with datasets, models, forget and seeds")
    elif not isinstance(grid, dict):
        problems.append(f"grid: expected a table, got {_show(grid)}")
    else:
        _unknown(grid, GRID_KEYS + OPTIONAL_GRID_KEYS, "grid", problems)
        for key in GRID_KEYS:
            if key not in grid:
                problems.append(f"grid.{key}: missing")
        lists = {
            k: _str_list(grid[k], f"grid.{k}", problems) or [] if k in grid else []
            for k in ("datasets", "models", "forget")
        }
        for i, d in enumerate(lists["datasets"]):
            c = _canonical(DATASETS, d, f"grid.datasets[{i}]", problems)
            if c is not None:
                datasets.append(c)
        for i, m in enumerate(lists["models"]):
            c = _canonical(MODELS, m, f"grid.models[{i}]", problems)
            if c is not None:
                models.append(c)
        for i, f in enumerate(lists["forget"]):
            entry = _forget_entry(f, base_dir, f"grid.forget[{i}]", problems)
            if entry is not None:
                forget.append(entry)
        if "seeds" in grid:
            s = grid["seeds"]
            if not isinstance(s, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in s):
                problems.append(f"grid.seeds: expected a list of non-negative integers, e.g. [0, 1, 2], got {_show(s)}")
            elif not s:
                problems.append("grid.seeds: is empty; the grid needs at least one seed")
            else:
                if len(set(s)) != len(s):
                    problems.append(f"grid.seeds: repeated seeds in {s}")
                seeds = list(dict.fromkeys(s))
        datasets, models = list(dict.fromkeys(datasets)), list(dict.fromkeys(models))
        if len({f.spec for f in forget}) != len(forget):
            problems.append("grid.forget: two entries name the same forget set")
        if "manipulations" in grid:
            manipulations = _manipulations(grid["manipulations"], problems)
        if any(f.spec.startswith("poisoned") for f in forget) and not any(manipulations):
            problems.append("grid.forget: poisoned forget specs need grid.manipulations (e.g. ['badnets:value=1'])")

    # --- model_args -----------------------------------------------------------------------------------
    model_args: dict[str, dict[str, Any]] = {}
    margs = raw.get("model_args", {})
    if not isinstance(margs, dict):
        problems.append(f"model_args: expected tables like [model_args.resnet18], got {_show(margs)}")
    else:
        for mname, table in margs.items():
            where = f"model_args.{mname}"
            c = _canonical(MODELS, mname, where, problems)
            if not isinstance(table, dict):
                problems.append(f"{where}: expected a table of keyword arguments, got {_show(table)}")
                continue
            bad = [k for k, v in table.items() if not isinstance(v, _SCALARS)]
            for k in bad:
                problems.append(f"{where}.{k}: expected a string, number or boolean, got {_show(table[k])}")
            if c is not None:
                if models and c not in models:
                    problems.append(f"{where}: model {c!r} is not in grid.models ({', '.join(models)})")
                model_args[c] = dict(sorted(table.items()))

    resources = _resources(raw.get("resources", {}), problems)

    # --- methods --------------------------------------------------------------------------------------
    kinds = sorted({f.kind for f in forget})
    methods = _methods(raw.get("methods"), datasets, models, kinds, problems)

    if problems:
        return None
    return BenchSpec(
        datasets=tuple(datasets),
        models=tuple(models),
        forget=tuple(forget),
        seeds=tuple(seeds),
        methods=tuple(methods),
        model_args=model_args,
        metrics=tuple(metrics) if metrics else None,
        name=name,
        description=description,
        runner=runner,
        source_text=text,
        manipulations=tuple(manipulations),
        audits=audits,
        oracles=oracles,
        resources=resources,
    )


def _resources(table: Any, problems: list[str]) -> dict[str, float]:
    """``[resources]``: num_cpus > 0 and num_gpus >= 0 per run (read by the Ray executor only)."""
    if not isinstance(table, dict):
        problems.append(f"resources: expected a table like [resources] num_cpus = 1, got {_show(table)}")
        return {}
    _unknown(table, RESOURCE_KEYS, "resources", problems)
    out: dict[str, float] = {}
    for key in RESOURCE_KEYS:
        if key not in table:
            continue
        v = table[key]
        if not resource_ok(key, v):
            want = "a number > 0" if key == "num_cpus" else "a number >= 0"
            problems.append(f"resources.{key}: expected {want}, got {_show(v)}")
            continue
        out[key] = float(v)
    return out


def resource_ok(key: str, value: object) -> bool:
    """A valid per-run resource amount: num_cpus a finite number > 0, num_gpus a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > 0 if key == "num_cpus" else value >= 0


def _manipulations(value: Any, problems: list[str]) -> list[str | None]:
    """``grid.manipulations``: canonical specs (``"none"`` → None), each parsed now."""
    from ..data.manipulations import parse_manipulation

    texts = _str_list(value, "grid.manipulations", problems)
    out: list[str | None] = []
    for i, text in enumerate(texts or []):
        try:
            m = parse_manipulation(text)
        except ConfigError as exc:
            problems.append(f"grid.manipulations[{i}]: {exc}")
            continue
        out.append(str(m) if m is not None else None)
    if len(set(out)) != len(out):
        problems.append("grid.manipulations: two entries name the same manipulation")
    return out or [None]


def _forget_entry(text: str, base_dir: Path, where: str, problems: list[str]) -> ForgetEntry | None:
    from ..data import parse_forget_spec

    arg = text.strip()
    kind_part, _, rest = arg.partition(":")
    if kind_part.strip().lower() == "indices" and rest.strip():
        p = Path(rest.strip()).expanduser()
        if not p.is_absolute():
            p = (base_dir / p).resolve()
        arg = f"indices:{p}"
    try:
        parsed = parse_forget_spec(arg)
    except ConfigError as exc:
        problems.append(f"{where}: {exc}")
        return None
    except OSError as exc:
        problems.append(f"{where}: cannot read the indices file: {exc}")
        return None
    if parsed.kind == "none":
        problems.append(f"{where}: 'none' forgets nothing; use class:K, random:F or indices:FILE")
        return None
    return ForgetEntry(spec=str(parsed), arg=arg, kind="class" if parsed.kind == "class" else "random")


def check_audits(audits: str | None, oracles: Any) -> None:
    """Raise `ConfigError` for an unknown audit level / name or a bad oracle count (K = 0 or K ≥ 3)."""
    from ..audit_models import plan_audit_models
    from ..evaluation.levels import resolve_audits

    plan_audit_models(resolve_audits(audits), oracles)


def _check_metrics(metrics: list[str], problems: list[str]) -> None:
    """Check a metric selection with the evaluation package (metrics, audits, ``default``), when importable."""
    from ..errors import UnlearnkitError

    try:
        from ..evaluation import resolve_selection
    except ImportError:  # evaluation not importable: run_experiment checks the names itself
        return
    for i, m in enumerate(metrics):
        try:
            resolve_selection([m])
        except UnlearnkitError as exc:
            problems.append(f"metrics[{i}]: {exc}")


def _methods(
    entries: Any, datasets: list[str], models: list[str], kinds: list[str], problems: list[str]
) -> list[MethodEntry]:
    from ..errors import UnlearnkitError
    from ..methods import METHODS, create_method

    if entries is None:
        problems.append('methods: missing; add at least one [[methods]] table with name = "…"')
        return []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        problems.append(f"methods: expected [[methods]] tables, got {_show(entries)}")
        return []
    if not entries:
        problems.append("methods: is empty; add at least one [[methods]] table")
        return []
    out: list[MethodEntry] = []
    unnamed: list[str | None] = [None]  # no datasets/models listed: validate for any
    for i, entry in enumerate(entries):
        where = f"methods[{i}]"
        _unknown(entry, METHOD_KEYS, where, problems)
        name = entry.get("name")
        if not isinstance(name, str):
            problems.append(f"{where}.name: {'missing' if name is None else 'expected a string, got ' + _show(name)}")
            continue
        where = f"methods[{i}] ({name})"
        overrides = entry.get("set", {})
        if not isinstance(overrides, dict):
            problems.append(f"{where}.set: expected a table like {{ lr = 0.01 }}, got {_show(overrides)}")
            overrides = None
        label = entry.get("label")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            problems.append(f"{where}.label: expected a non-empty string, got {_show(label)}")
            label = None
        canonical = _canonical(METHODS, name, f"{where}.name", problems)
        if canonical is None or overrides is None:
            continue
        cls = METHODS.get(canonical)
        if "plain" not in cls.requires.model_kinds:
            problems.append(
                f"{where}.name: {canonical!r} deletes from {'/'.join(sorted(cls.requires.model_kinds))} models only, "
                "and a bench grid trains plain networks (head models: benchmarks/certified_heads.py)"
            )
            continue
        resolved: dict[str, Any] | None = None
        errors: list[str] = []
        for dataset in datasets or unnamed:
            for model in models or unnamed:
                for kind in kinds:
                    if kind not in cls.requires.split_kinds:
                        continue
                    try:
                        method = create_method(canonical, dataset=dataset, model=model, kind=kind, **overrides)
                    except (UnlearnkitError, TypeError, ValueError) as exc:
                        msg = str(exc)
                        if msg not in errors:
                            errors.append(msg)
                        continue
                    if resolved is None:
                        cfg = method.config.to_dict()
                        resolved = {k: cfg.get(k, overrides[k]) for k in sorted(overrides)}
        problems.extend(f"{where}.set: {e}" for e in errors)
        if errors:
            continue
        if resolved is None:  # no compatible forget kind: every run of it is skipped; still key on what was given
            resolved = dict(sorted(overrides.items()))
        out.append(MethodEntry(name=canonical, overrides=resolved, label=label or default_label(canonical, resolved)))
    seen: dict[str, int] = {}
    for e in out:
        seen[e.label] = seen.get(e.label, 0) + 1
    for lbl, n in seen.items():
        if n > 1:
            problems.append(f'methods: label {lbl!r} is used by {n} entries; give each a distinct label = "…"')
    pairs = [(e.name, sha256_json(e.overrides)) for e in out]
    for (mname, _), n in {p: pairs.count(p) for p in pairs}.items():
        if n > 1:
            problems.append(f"methods: {mname!r} appears {n} times with the same options; remove the duplicate")
    return out


def default_label(name: str, overrides: Mapping[str, Any]) -> str:
    """``name`` or ``name[k=v,…]`` for an entry without an explicit label."""
    if not overrides:
        return name
    return f"{name}[{','.join(f'{k}={v}' for k, v in sorted(overrides.items()))}]"


# ------------------------------------------------------------------------------------------------ planning
def plan_runs(spec: BenchSpec) -> list[Run]:
    """Expand the grid in the order dataset > model > forget > seed > method.

    Seeds before methods: one seed's retrained oracle serves every method before the next seed starts, and an
    interrupted bench holds complete seeds. Runs a method cannot do (``requires.split_kinds``) carry a
    ``skip_reason`` instead of being dropped, so they show in the console and in ``bench.json``.
    """
    from ..methods import METHODS

    runs: list[Run] = []
    for dataset in spec.datasets:
        for model in spec.models:
            margs = spec.model_args.get(model, {})
            for manip in spec.manipulations:
                for forget in spec.forget:
                    for seed in spec.seeds:
                        for m in spec.methods:
                            kinds = METHODS.get(m.name).requires.split_kinds
                            reason = None
                            if forget.kind not in kinds:
                                reason = (
                                    f"{m.name} supports only {'/'.join(sorted(kinds))} forgetting, "
                                    f"not {forget.kind} ({forget.spec})"
                                )
                            if manip is None and forget.spec.startswith("poisoned"):
                                reason = f"{forget.spec} needs manipulated data (this cell is the clean data)"
                            key = run_key(dataset, model, margs, forget.spec, m.name, m.overrides, seed, manip)
                            runs.append(Run(dataset, model, margs, forget, m, seed, key, reason, manip))
    return runs
