"""Grid search of a method's hyper-parameters against the retrained oracle, on a validation forget split.

The validation split is built with ``validation_seed`` (not a benchmark seed), so a tuned preset is never
chosen on the very split it is later reported on. For class-wise specs the forgotten class is fixed by the spec,
so only the model seeds differ; pass a different class to validate on (e.g. tune on ``class:5``, report on
``class:3``) when that matters.

Example:
    >>> from unlearnkit.tune import tune
    >>> ranked = tune("ft", "synthetic", "small_cnn", "class:1", {"lr": [0.01, 0.05]}, device="cpu")  # doctest: +SKIP
    >>> best_config, best_gap = ranked[0]  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .data.datasets import DatasetBundle, load_dataset
from .data.splits import Split, split_for
from .device import resolve_device
from .errors import ConfigError
from .methods import METHODS, UnlearnData, create_method
from .oracle import train_or_load
from .runner import run_method
from .training import accuracy

if TYPE_CHECKING:
    from .evaluation import EvaluationCache

logger = logging.getLogger(__name__)


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

    ``cache`` (an `EvaluationCache`) lets the configs of one tuning run score the retrained model once.
    """
    try:
        from .evaluation import evaluate
    except ImportError:  # pragma: no cover - the evaluation package is part of unlearnkit
        return _simple_avg_gap(unlearned, retrained, bundle, split, device)
    record = evaluate(unlearned, bundle, split, retrained=retrained, device=device, cache=cache, audits="none")
    gap = record.get("gaps_to_retrained", {}).get("avg_gap_to_retrained")
    if gap is None or not math.isfinite(gap):
        return _simple_avg_gap(unlearned, retrained, bundle, split, device)
    return float(gap)


def tune(
    method: str,
    dataset: str | DatasetBundle,
    model: str,
    forget: str,
    grid: Mapping[str, Any],
    *,
    seeds: Sequence[int] = (0,),
    validation_seed: int = 100,
    device: str | torch.device = "auto",
    data_dir: str | None = None,
    base: dict[str, Any] | None = None,
) -> list[tuple[dict[str, Any], float]]:
    """Rank every config of ``grid`` by its Avg. Gap to the retrained model on a validation split.

    For each seed, the original (all training data) and the retrained oracle (validation retain set) come from
    `unlearnkit.oracle.train_or_load` (cached). Each config starts from the method's preset for (dataset, model,
    split kind), then ``base``, then the grid values. A config that diverges scores ``inf``.

    Args:
        method: registered method name.
        dataset: dataset name (or a loaded bundle).
        model: model name, e.g. ``small_cnn``.
        forget: forget spec, e.g. ``class:3`` or ``random:0.1``.
        grid: values to try per config key, e.g. ``{"lr": [0.01, 0.05], "epochs": [3, 5]}``.
        seeds: model seeds averaged over (originals and oracles are trained per seed).
        validation_seed: seed of the validation forget split (keep it away from the benchmark seeds).
        device: ``auto``, ``cpu`` or ``cuda``.
        data_dir: where the dataset lives.
        base: fixed overrides applied to every config.

    Returns:
        ``[(config, avg_gap), …]`` sorted from the smallest (best) gap; ``config`` holds the grid values only.
    """
    import sys

    from .errors import DivergenceError
    from .evaluation import EvaluationCache

    name = METHODS.canonical(method)
    if not seeds:
        raise ConfigError("tune needs at least one model seed")
    given: list[object] = [*seeds, validation_seed]
    for s in given:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**63:
            raise ConfigError(f"seeds must be integers in [0, 2^63), got {s!r}")
    seeds = list(dict.fromkeys(seeds))
    bundle = load_dataset(dataset, data_dir) if isinstance(dataset, str) else dataset
    dev = resolve_device(device)
    split = split_for(bundle, forget, validation_seed)
    configs = grid_configs(grid)
    for cfg in configs:  # validate every config before any training
        create_method(name, dataset=bundle.info.name, model=model, kind=split.kind, **{**(base or {}), **cfg})
    data = dataclasses.replace(UnlearnData.from_split(bundle, split), test=bundle.test.subset(split.test))
    totals = [0.0] * len(configs)
    failures: list[str] = []
    eval_cache = EvaluationCache()  # every config is scored against the same retrained model
    for seed in seeds:
        original = train_or_load(bundle, model, None, seed=seed, device=dev).model
        retrained = train_or_load(bundle, model, split, seed=seed, device=dev).model
        for i, cfg in enumerate(configs):
            m = create_method(name, dataset=bundle.info.name, model=model, kind=split.kind, **{**(base or {}), **cfg})
            try:
                out = run_method(m, original, data, device=dev, seed=seed).model
                gap = avg_gap(out, retrained, bundle, split, dev, cache=eval_cache)
            except DivergenceError as exc:
                logger.info("tune %s %s seed %d diverged: %s", name, cfg, seed, exc)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                failures.append(f"{cfg} seed {seed}: {reason}")
                print(f"tune: {name} {cfg} seed {seed} failed: {reason}", file=sys.stderr)
                gap = math.inf
            logger.info("tune %s %s seed %d: avg gap %.2f", name, cfg, seed, gap)
            totals[i] += gap
    ranked = [(cfg, total / len(seeds)) for cfg, total in zip(configs, totals, strict=False)]
    if all(not math.isfinite(g) for _, g in ranked):
        raise DivergenceError(
            f"every one of the {len(configs)} configuration(s) of {name} failed on at least one "
            f"seed ({len(failures)} failure(s), first: {failures[0] if failures else 'unknown'}); "
            "lower the learning rate or the epochs in --grid/--set"
        )
    return sorted(ranked, key=lambda t: t[1])


__all__ = ["avg_gap", "grid_configs", "tune"]
