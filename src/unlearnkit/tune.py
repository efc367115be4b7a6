"""Hyper-parameter search (Optuna) of a method against the retrained oracle, on a validation forget split.

The objective of a trial is the Avg. Gap to the retrained model on a *validation* split (``forget`` built with
``validation_seed``; pass another class than the benchmark's, e.g. ``class:2``, or a ``random:<f>`` spec), averaged
over originals whose seeds are not benchmark seeds (default 10 and 11). A trial whose unlearning time exceeds
``budget`` × the retrained model's recorded wall time is pruned (or penalised, ``over_budget="penalise"``), so the
search cannot buy quality with time. After the first original, the trial reports its gap and a median pruner may
stop it before the second original runs.

Each method declares its search space beside its presets, in the ``[search]`` table of
``methods/presets/<name>.toml``::

    [search]
    lr = { low = 1e-4, high = 0.1, log = true }
    epochs = { choices = [1, 2, 3, 5] }
    mask_ratio = { low = 0.1, high = 0.9 }

The study lives in an Optuna storage (``sqlite:///…/study.db``) under a stable name, so a killed study resumes
where it stopped (``n_trials`` is the study's total). Optuna is an optional extra: ``pip install
'unlearnkit[tune]'``.

Example:
    >>> from unlearnkit.tune import tune
    >>> res = tune("ft", "synthetic", "small_cnn", "class:1", n_trials=4, device="cpu")  # doctest: +SKIP
    >>> res.best_config, res.best_gap  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shlex
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from .data.datasets import DatasetBundle, load_dataset
from .data.splits import Split, split_for
from .device import resolve_device
from .errors import ConfigError, DivergenceError
from .methods import METHODS, UnlearnData, create_method
from .oracle import train_or_load
from .runner import run_method
from .training import accuracy
from .tune_space import (
    Param,
    _is_int,
    _is_num,
    check_space,
    grid_configs,
    parse_search_space,
    search_space,
    space_from_grid,
)
from .tune_storage import IDENTITY_ATTR, check_study, require_optuna

if TYPE_CHECKING:
    from .evaluation import EvaluationCache

logger = logging.getLogger(__name__)

DEFAULT_SEEDS = (10, 11)  # tuning originals: never the benchmark's seeds (0, 1, 2)
DEFAULT_BUDGET = {"random": 0.25, "class": 0.10}  # × the retrained model's wall time
OVER_BUDGET_PENALTY = 10.0  # "penalise": pp added per 100 % over the budget


# ------------------------------------------------------------------------------------------------ objective parts
def _simple_avg_gap(
    unlearned: nn.Module, retrained: nn.Module, bundle: DatasetBundle, split: Split, device: torch.device
) -> float:
    """Mean |Δ| to the retrained model over accuracy on forget / retain / test (fallback metric)."""
    sets = [bundle.train.subset(split.forget), bundle.train.subset(split.retain), bundle.test.subset(split.test)]
    gaps = [abs(accuracy(unlearned, s, device=device) - accuracy(retrained, s, device=device)) for s in sets]
    return sum(gaps) / len(gaps)


def avg_gap(
    unlearned: nn.Module,
    retrained: nn.Module,
    bundle: DatasetBundle,
    split: Split,
    device: torch.device,
    *,
    cache: EvaluationCache | None = None,
) -> float:
    """The Avg. Gap of `unlearnkit.evaluation.evaluate` (accuracies + MIA), or the 3-accuracy gap without it.

    ``cache`` (an `EvaluationCache`) lets the trials of one study score the retrained model once.
    """
    from .evaluation import EvalOptions, evaluate

    # no audits inside the objective: only the gap is read
    options = EvalOptions(audits="none", cache=cache)
    record = evaluate(unlearned, bundle, split, retrained=retrained, device=device, options=options)
    gap = record.get("gaps_to_retrained", {}).get("avg_gap_to_retrained")
    if gap is None or not math.isfinite(gap):
        return _simple_avg_gap(unlearned, retrained, bundle, split, device)
    return float(gap)


# ------------------------------------------------------------------------------------------------ study
@dataclass
class TuneResult:
    """A finished (or resumed) study: every trial, best first, and how to reproduce it."""

    method: str
    dataset: str
    model: str
    forget: str
    kind: str
    study_name: str
    storage: str | None
    sampler: str
    sampler_seed: int
    n_trials: int | None
    seeds: list[int]
    validation_seed: int
    budget: float | None
    over_budget: str
    base: dict[str, Any]
    space: dict[str, Param]
    trials: list[dict[str, Any]] = field(default_factory=list)
    from_grid: bool = False  # the space came from --grid (not the method's [search] table)

    @property
    def completed(self) -> list[dict[str, Any]]:
        return [t for t in self.trials if t["state"] == "COMPLETE"]

    @property
    def best(self) -> dict[str, Any] | None:
        done = self.completed
        return done[0] if done else None

    @property
    def best_config(self) -> dict[str, Any]:
        best = self.best
        return {**self.base, **(best["config"] if best else {})}

    @property
    def best_gap(self) -> float | None:
        best = self.best
        return None if best is None else best["avg_gap"]

    @property
    def ranking(self) -> list[tuple[dict[str, Any], float]]:
        """``[(searched config, avg gap), …]``, best first; failed and pruned trials score ``inf``."""
        return [(t["config"], t["avg_gap"] if t["state"] == "COMPLETE" else math.inf) for t in self.trials]

    def command(self) -> str:
        """The `unlearnkit tune` command that reproduces (or resumes) this study."""
        parts = ["unlearnkit", "tune", "--dataset", self.dataset, "--model", self.model, "--forget", self.forget]
        parts += ["--method", self.method, "--seeds", ",".join(map(str, self.seeds))]
        parts += ["--validation-seed", str(self.validation_seed), "--sampler", self.sampler]
        parts += ["--sampler-seed", str(self.sampler_seed)]
        if self.n_trials is not None:
            parts += ["--n-trials", str(self.n_trials)]
        parts += ["--budget", "none" if self.budget is None else f"{self.budget:g}", "--over-budget", self.over_budget]
        parts += [f"--set={k}={_cli_value(v)}" for k, v in self.base.items()]
        if self.from_grid:
            parts += [f"--grid={p.name}={','.join(_cli_value(c) for c in p.choices)}" for p in self.space.values()]
        if self.storage is not None:
            parts += ["--storage", self.storage]
        parts += ["--study-name", self.study_name]
        return shlex.join(parts)

    def preset_block(self) -> str:
        """A TOML table for ``methods/presets/<method>.toml``: the best config, its ``source`` naming the study."""
        best = self.best
        gap = "no trial completed" if best is None else f"avg gap {best['avg_gap']:.3f}"
        budget = "no time budget" if self.budget is None else f"budget {self.budget:g}× retrain ({self.over_budget})"
        source = (
            f"Optuna study {self.study_name!r} ({self.storage or 'in memory'}), {self.sampler} sampler, "
            f"{len(self.completed)}/{len(self.trials)} trials complete: {gap} on validation {self.forget} "
            f"(split seed {self.validation_seed}), originals {','.join(map(str, self.seeds))}, {budget}; "
            f"reproduce: {self.command()}"
        )
        lines = [f"[{self.dataset}.{self.model}.{self.kind}]", f"source = {json.dumps(source)}"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in self.best_config.items()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "dataset": self.dataset,
            "model": self.model,
            "forget": self.forget,
            "kind": self.kind,
            "study_name": self.study_name,
            "storage": self.storage,
            "sampler": self.sampler,
            "sampler_seed": self.sampler_seed,
            "seeds": self.seeds,
            "validation_seed": self.validation_seed,
            "budget": self.budget,
            "over_budget": self.over_budget,
            "base": self.base,
            "search_space": {k: p.to_dict() for k, p in self.space.items()},
            "best": self.best,
            "best_config": self.best_config if self.best else None,
            "ranking": self.trials,
            "command": self.command(),
            "preset_toml": self.preset_block(),
        }


def _cli_value(v: Any) -> str:
    return json.dumps(v) if isinstance(v, bool) else str(v)


def _toml_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float) and not math.isfinite(v):
        return "inf" if v > 0 else ("-inf" if v < 0 else "nan")
    return json.dumps(v)


def default_study_name(
    method: str, dataset: str, model: str, forget: str, seeds: Sequence[int], vseed: int, sampler: str
) -> str:
    return f"{method}-{dataset}-{model}-{forget}-v{vseed}-s{'_'.join(map(str, seeds))}-{sampler}"


Objective = Callable[[Any], float]


def run_study(
    objective: Objective,
    *,
    study_name: str,
    storage: str | None = None,
    sampler: str = "tpe",
    space: Mapping[str, Param] | None = None,
    sampler_seed: int = 0,
    n_trials: int | None = None,
    timeout: float | None = None,
    n_jobs: int = 1,
    prune: bool = True,
    n_startup_trials: int = 3,
    identity: Mapping[str, Any] | None = None,
) -> Any:
    """Create or resume ``study_name`` in ``storage`` and run ``objective`` until the study holds ``n_trials``
    finished trials (completed, pruned or failed; a killed run's RUNNING trials do not count) or ``timeout``
    seconds pass. ``sampler``: ``tpe`` (seeded) or ``grid`` (every combination of the space's choices).
    Returns the Optuna study. ``identity`` (method, data, model, forget spec) is stored with a new study and
    checked on a resumed one (`check_study`)."""
    optuna = require_optuna()
    check_study(storage, study_name, identity)
    if sampler == "tpe":
        smp = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=n_startup_trials)
    elif sampler == "grid":
        grid = {}
        for p in (space or {}).values():
            if p.kind != "categorical":
                raise ConfigError(f"the grid sampler needs choices for {p.name}, not a range; use --grid or tpe")
            grid[p.name] = list(p.choices)
        smp = optuna.samplers.GridSampler(grid, seed=sampler_seed)
    else:
        raise ConfigError(f"unknown sampler {sampler!r}; choose tpe or grid")
    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=0)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(
        study_name=study_name, storage=storage, sampler=smp, pruner=pruner, direction="minimize", load_if_exists=True
    )
    if identity is not None and IDENTITY_ATTR not in study.user_attrs:
        study.set_user_attr(IDENTITY_ATTR, dict(identity))
    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    done = len(study.get_trials(deepcopy=False, states=states))
    remaining = None if n_trials is None else max(n_trials - done, 0)
    if remaining == 0:
        logger.info("study %s already holds %d finished trials", study_name, done)
        return study
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported once, by the objective
    try:
        study.optimize(objective, n_trials=remaining, timeout=timeout, n_jobs=n_jobs, catch=(DivergenceError,))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return study


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """The study's finished trials as rows, completed ones first by gap, then pruned, then failed."""
    optuna = require_optuna()
    order = {"COMPLETE": 0, "PRUNED": 1, "FAIL": 2}
    rows = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name
        if state not in order:
            continue
        rows.append(
            {
                "number": t.number,
                "state": state,
                "config": dict(t.params),
                "avg_gap": t.value if t.state == optuna.trial.TrialState.COMPLETE else None,
                **dict(t.user_attrs),
            }
        )
    return sorted(rows, key=lambda r: (order[r["state"]], r["avg_gap"] if r["avg_gap"] is not None else 0, r["number"]))


def tune(
    method: str,
    dataset: str | DatasetBundle,
    model: str,
    forget: str,
    grid: Mapping[str, Any] | None = None,
    *,
    space: Mapping[str, Param] | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    validation_seed: int = 100,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    base: dict[str, Any] | None = None,
    sampler: str | None = None,
    sampler_seed: int = 0,
    n_trials: int | None = None,
    timeout: float | None = None,
    n_jobs: int = 1,
    storage: str | None = None,
    study_name: str | None = None,
    budget: float | Literal["auto"] | None = "auto",
    over_budget: Literal["prune", "penalise"] = "prune",
    prune: bool | None = None,
    on_event: Callable[[str], None] | None = None,
) -> TuneResult:
    """Search the method's options for the smallest Avg. Gap to the retrained model on a validation split.

    Args:
        method: registered method name.
        dataset: dataset name (or a loaded bundle).
        model: model name, e.g. ``small_cnn``.
        forget: validation forget spec, e.g. ``class:2`` or ``random:0.1`` (drawn with ``validation_seed``).
        grid: values to try per config key (the old grid search); with it the sampler defaults to ``grid``.
        space: the search space (default: the ``[search]`` table of the method's preset file, or ``grid``).
        seeds: seeds of the originals (and their retrained oracles) each trial is averaged over.
        validation_seed: seed of the validation forget split (keep it away from the benchmark seeds).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: where the dataset lives.
        base: fixed overrides applied to every trial (on top of the preset for dataset/model/kind).
        sampler: ``tpe`` (default) or ``grid``.
        sampler_seed: seed of the sampler.
        n_trials: the study's total number of finished trials (default 30 for tpe, the grid size for grid).
        timeout: stop starting trials after this many seconds.
        n_jobs: parallel trials (threads).
        storage: Optuna storage URL, e.g. ``sqlite:///runs/tune/study.db`` (None: in memory, no resume).
        study_name: default ``<method>-<dataset>-<model>-<forget>-v<vseed>-s<seeds>-<sampler>``.
        budget: unlearning wall time allowed, as a fraction of the retrained model's recorded wall time
            (``"auto"``: 0.25 for random, 0.10 for class-wise forgetting; None: no budget).
        over_budget: ``prune`` a trial over budget, or ``penalise`` its gap by 10 pp per 100 % over.
        prune: median pruning on the first original's gap (default on for tpe, off for grid).
        on_event: receives one line per failed trial (the library never prints).

    Raises:
        ConfigError: a bad space, config, seed or option (before any training).
        DivergenceError: every trial failed, or none completed.
    """
    from .evaluation import EvaluationCache

    optuna = require_optuna()
    name = METHODS.canonical(method)
    if not seeds:
        raise ConfigError("tune needs at least one model seed")
    for s in [*seeds, validation_seed]:
        if not _is_int(s) or not 0 <= s < 2**63:
            raise ConfigError(f"seeds must be integers in [0, 2^63), got {s!r}")
    seeds = list(dict.fromkeys(seeds))
    if n_trials is not None and (isinstance(n_trials, bool) or not _is_int(n_trials) or n_trials < 1):
        raise ConfigError(f"n_trials must be a positive integer, got {n_trials!r}")
    if timeout is not None and not (_is_num(timeout) and timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if not _is_int(n_jobs) or n_jobs < 1:
        raise ConfigError(f"n_jobs must be a positive integer, got {n_jobs!r}")
    if over_budget not in ("prune", "penalise"):
        raise ConfigError(f"over_budget must be prune or penalise, got {over_budget!r}")
    if budget not in ("auto", None) and not (_is_num(budget) and budget > 0):  # type: ignore[operator]
        raise ConfigError(f"budget must be a positive fraction of the retraining time (or none), got {budget!r}")
    bundle = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
    dev = resolve_device(device)
    split = split_for(bundle, forget, validation_seed)
    kind = split.kind
    from_grid = space is None and bool(grid)
    if space is None:
        space = space_from_grid(grid, name) if grid else search_space(name)
    sampler = sampler or ("grid" if grid else "tpe")
    if sampler not in ("tpe", "grid"):
        raise ConfigError(f"unknown sampler {sampler!r}; choose tpe or grid")
    if not space:
        raise ConfigError(f"{name} declares no [search] table in its preset file; pass a grid (--grid key=v1,v2)")
    if sampler == "grid" and any(p.kind != "categorical" for p in space.values()):
        ranged = [p.name for p in space.values() if p.kind != "categorical"]
        raise ConfigError(f"the grid sampler needs choices, not ranges ({', '.join(ranged)}); use --grid or tpe")
    base = dict(base or {})
    check_space(name, space, dataset=bundle.info.name, model=model, kind=kind, base=base)  # before any training
    if sampler == "grid" and n_trials is None:
        n_trials = math.prod(len(p.choices) for p in space.values())
    elif n_trials is None:
        n_trials = 30
    frac = DEFAULT_BUDGET.get(kind, 0.25) if budget == "auto" else budget
    prune = (sampler == "tpe") if prune is None else prune
    study_name = study_name or default_study_name(
        name, bundle.info.name, model, forget, seeds, validation_seed, sampler
    )

    identity = {"method": name, "dataset": bundle.info.name, "model": model, "forget": str(forget)}
    check_study(storage, study_name, identity)  # a damaged storage or another method's study fails before training
    data = dataclasses.replace(UnlearnData.from_split(bundle, split), test=bundle.test.subset(split.test))
    originals, retrained, limits = {}, {}, {}
    for seed in seeds:
        originals[seed] = train_or_load(bundle, model, None, seed=seed, device=dev).model
        rt = train_or_load(bundle, model, split, seed=seed, device=dev)
        retrained[seed] = rt.model
        wall = rt.meta.get("wall_seconds")
        limits[seed] = None if frac is None or not wall else frac * float(wall)
        if frac is not None and not wall:
            logger.warning("the retrained model of seed %d has no recorded wall time; no budget for it", seed)
    local = threading.local()  # one evaluation cache per worker thread

    def objective(trial: Any) -> float:
        params = {p.name: p.suggest(trial) for p in space.values()}
        cfg = {**base, **params}
        if not hasattr(local, "cache"):
            local.cache = EvaluationCache()
        gaps: list[float] = []
        seconds: list[float] = []
        for i, seed in enumerate(seeds):
            m = create_method(name, dataset=bundle.info.name, model=model, kind=kind, **cfg)
            try:
                res = run_method(m, originals[seed], data, device=dev, seed=seed)
                seconds.append(res.seconds)
                trial.set_user_attr("seconds", [round(s, 4) for s in seconds])
                limit = limits[seed]
                over = limit is not None and res.seconds > limit
                penalty = 0.0
                if over:
                    assert limit is not None
                    ratio = res.seconds / limit
                    trial.set_user_attr("over_budget", {"seed": seed, "seconds": res.seconds, "limit": limit})
                    if over_budget == "prune":
                        trial.set_user_attr("pruned_by", "budget")
                        raise optuna.TrialPruned(f"seed {seed}: {res.seconds:.2f} s > budget {limit:.2f} s")
                    penalty = OVER_BUDGET_PENALTY * (ratio - 1.0)
                    trial.set_user_attr("penalised", True)
                gap = avg_gap(res.model, retrained[seed], bundle, split, dev, cache=local.cache)
            except DivergenceError as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                trial.set_user_attr("failure", f"seed {seed}: {reason}")
                if on_event is not None:
                    on_event(f"{name} {params} seed {seed} failed: {reason}")
                raise
            gaps.append(gap + penalty)
            trial.set_user_attr("gaps", [round(g, 4) for g in gaps])
            logger.info("tune %s %s seed %d: avg gap %.3f (%.2f s)", name, params, seed, gap, res.seconds)
            if i == 0 and len(seeds) > 1 and prune:
                trial.report(gap + penalty, step=0)
                if trial.should_prune():
                    trial.set_user_attr("pruned_by", "median")
                    raise optuna.TrialPruned(f"gap {gap:.3f} on the first original is above the median")
        return sum(gaps) / len(gaps)

    study = run_study(
        objective,
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        space=space,
        sampler_seed=sampler_seed,
        n_trials=n_trials,
        timeout=timeout,
        n_jobs=n_jobs,
        prune=prune,
        identity=identity,
    )
    result = TuneResult(
        method=name,
        dataset=bundle.info.name,
        model=model,
        forget=forget,
        kind=kind,
        study_name=study_name,
        storage=storage,
        sampler=sampler,
        sampler_seed=sampler_seed,
        n_trials=n_trials,
        seeds=seeds,
        validation_seed=validation_seed,
        budget=frac,
        over_budget=over_budget,
        base=base,
        space=dict(space),
        trials=trial_rows(study),
        from_grid=from_grid,
    )
    check_result(result)
    return result


def check_result(result: TuneResult) -> None:
    """Raise `DivergenceError` when the study has no completed trial, saying why (failures, budget, pruning)."""
    if result.completed:
        return
    failed = [t for t in result.trials if t["state"] == "FAIL"]
    over = [t for t in result.trials if t.get("pruned_by") == "budget"]
    first = failed[0].get("failure", "unknown") if failed else None
    if failed and len(failed) == len(result.trials):
        raise DivergenceError(
            f"every one of the {len(failed)} trial(s) of {result.method} failed (first: {first}); "
            "lower the learning rate or the epochs in the search space, --grid or --set"
        )
    raise DivergenceError(
        f"no trial of {result.method} completed: {len(failed)} failed, {len(over)} over the time budget "
        f"({result.budget}× retraining), {len(result.trials) - len(failed) - len(over)} pruned; "
        "raise --budget, lower the epochs, or run more trials"
    )


__all__ = [
    "DEFAULT_BUDGET",
    "DEFAULT_SEEDS",
    "Param",
    "TuneResult",
    "avg_gap",
    "check_result",
    "check_space",
    "grid_configs",
    "parse_search_space",
    "require_optuna",
    "run_study",
    "search_space",
    "space_from_grid",
    "trial_rows",
    "tune",
]
