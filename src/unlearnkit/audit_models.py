"""The extra models strong audits need, trained through the one model cache, with the cost stated first.

`plan_audit_models` says what a given audit selection and ``--oracles K`` need and estimates the cost from the
retrained model's recorded training time and the method's measured runtime; `build_audit_models` trains them
(every training goes through `unlearnkit.oracle.train_or_load`, so a second run, or a bench with other methods
on the same split, reuses them) and returns the ``extra_models`` mapping `unlearnkit.evaluation.evaluate` reads:

* ``retrained_runs``: K retrained oracles, seeds ``seed + 1000·k`` (k = 0 is the retrained model itself and
  k = 1 the noise-floor model the pipeline already trains, so K = 2 costs nothing extra);
* ``unlearned_runs``: the method run N = K times from the same original with seeds ``seed + j`` (j = 0 is the
  evaluated unlearned model);
* ``ulira``: U-LiRA-lite shadows (evaluation.md §3.3, "target pool" design): a pool drawn from the retain
  set; shadow j is trained without the pool examples it never sees (cached like a retrained oracle on that
  indices split) and then unlearned with the method under test on the pool examples it saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

DEFAULT_STRONG_ORACLES = 4  # the competition score needs N ≥ 4 models per side
DEFAULT_SHADOWS = 8
DEFAULT_POOL = 200
ORACLE_SEED_OFFSET = 1000  # same offset as the pipeline's noise-floor model (k = 1)
SHADOW_SEED_OFFSET = 7919


@dataclass
class AuditModelPlan:
    """What `build_audit_models` will make, and what it will cost (seconds, estimated before any compute)."""

    oracles: int = 0  # K retrained oracles (incl. the retrained and the noise-floor model)
    unlearned_runs: int = 0  # N method runs (incl. the evaluated one)
    shadows: int = 0
    pool: int = 0
    trainings: int = 0  # new trainings at most (cached ones cost seconds)
    unlearnings: int = 0
    estimate_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = []
        if self.oracles:
            parts.append(f"{self.oracles} retrained oracles")
        if self.unlearned_runs:
            parts.append(f"{self.unlearned_runs} unlearning runs")
        if self.shadows:
            parts.append(f"{self.shadows} U-LiRA shadows (pool {self.pool})")
        cost = (
            f"~{self.estimate_seconds:.0f} s"
            if self.estimate_seconds is not None
            else "cost unknown (no recorded training time)"
        )
        what = ", ".join(parts) or "nothing"
        return (
            f"strong audits: {what} — up to {self.trainings} trainings and {self.unlearnings} unlearning runs, "
            f"{cost} (cached models cost seconds)"
        )


def plan_audit_models(
    audits: Sequence[str],
    oracles: int,
    *,
    method_kinds: Sequence[str] = ("class", "random"),
    train_seconds: float | None = None,
    unlearn_seconds: float | None = None,
    shadows: int = DEFAULT_SHADOWS,
    pool: int = DEFAULT_POOL,
) -> AuditModelPlan:
    """What the audits need. ``oracles`` = K (0: only what the audits need; strong audits need K ≥ 4)."""
    from .errors import ConfigError

    k: object = oracles  # checked as any object: specs and callers pass whatever they hold
    if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k in (1, 2):
        raise ConfigError(
            f"--oracles must be 0 or an integer ≥ 3 (K retrained oracles; the leave-one-out reference of the "
            f"oracle-distribution score needs two others per oracle), got {oracles!r}"
        )
    need_oracles = oracles > 0 or "oracle_margins" in audits
    need_runs = any(a in audits for a in ("competition", "competition_lite"))
    p = AuditModelPlan()
    if need_oracles or need_runs:
        p.oracles = oracles or DEFAULT_STRONG_ORACLES
    if need_runs:  # the competition score compares N unlearned with N retrained models
        p.oracles = p.unlearned_runs = max(p.oracles, DEFAULT_STRONG_ORACLES)
    if "ulira_lite" in audits:
        if "random" in method_kinds:
            p.shadows, p.pool = shadows, pool
        else:
            p.notes.append("ulira_lite skipped: the method supports only class-wise forgetting")
    p.trainings = max(p.oracles - 2, 0) + p.shadows
    p.unlearnings = max(p.unlearned_runs - 1, 0) + p.shadows
    if train_seconds is not None:
        p.estimate_seconds = p.trainings * float(train_seconds) + p.unlearnings * float(unlearn_seconds or 0.0)
    return p


def build_audit_models(
    plan: AuditModelPlan,
    *,
    bundle: Any,
    model: str,
    split: Any,
    method: Any,
    original: nn.Module,
    retrained: nn.Module,
    unlearned: nn.Module,
    noise_floor_model: nn.Module | None,
    seed: int,
    oracle_split: Any = None,
    model_kwargs: dict[str, Any] | None,
    device: Any,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train / run what ``plan`` lists; returns ``extra_models`` for `evaluate`."""
    from .methods import UnlearnData
    from .oracle import train_or_load
    from .runner import run_method

    def oracle(s: int) -> nn.Module:
        return train_or_load(
            bundle, model, oracle_split or split, seed=s, model_kwargs=model_kwargs, device=device, progress=progress
        ).model

    extra: dict[str, Any] = {}
    if plan.oracles:
        runs = [retrained]
        for k in range(1, plan.oracles):
            if k == 1 and noise_floor_model is not None:
                runs.append(noise_floor_model)
            else:
                runs.append(oracle(seed + ORACLE_SEED_OFFSET * k))
        extra["retrained_runs"] = runs
    if plan.unlearned_runs:
        data = UnlearnData.from_split(bundle, split)
        extra["unlearned_runs"] = [unlearned] + [
            run_method(method, original, data, device=device, seed=seed + j, progress=progress).model
            for j in range(1, plan.unlearned_runs)
        ]
    if plan.shadows:
        extra["ulira"] = _ulira_shadows(plan, bundle, model, split, method, seed, model_kwargs, device, progress)
    return extra


def _ulira_shadows(
    plan: AuditModelPlan,
    bundle: Any,
    model: str,
    split: Any,
    method: Any,
    seed: int,
    model_kwargs: dict[str, Any] | None,
    device: Any,
    progress: bool | None,
) -> Any:
    from .data import split_for
    from .data.splits import ForgetSpec
    from .evaluation.ulira import UliraShadows
    from .methods import UnlearnData
    from .oracle import train_or_load
    from .runner import run_method

    rng = np.random.default_rng(seed + SHADOW_SEED_OFFSET)
    retain = np.asarray(split.retain, dtype=np.int64)
    pool = np.sort(rng.choice(retain, size=min(plan.pool, len(retain) // 2), replace=False))
    in_mask = rng.random((plan.shadows, len(pool))) < 0.5
    base = np.setdiff1d(np.arange(len(bundle.train)), pool)
    models = []
    for j in range(plan.shadows):
        s = seed + SHADOW_SEED_OFFSET * (j + 1)
        never_seen = pool[~in_mask[j]]
        shadow_split = split_for(bundle, ForgetSpec("indices", indices=tuple(int(i) for i in never_seen)), s)
        trained = train_or_load(
            bundle, model, shadow_split, seed=s, model_kwargs=model_kwargs, device=device, progress=progress
        ).model
        data = UnlearnData(
            forget=bundle.train.subset(pool[in_mask[j]]),
            retain=bundle.train.subset(base),
            test=bundle.test,
            augment=bundle.info.augment,
            num_classes=bundle.info.num_classes,
        )
        models.append(run_method(method, trained, data, device=device, seed=s, progress=progress).model)
    return UliraShadows(models, pool, in_mask)
