"""Test helpers for the bench: a fast fake runner and two fake methods (no training, no data).

`register_fake_methods` also registers the fake runner under the name ``unlearnkit_fake``; select it with
``runner = "unlearnkit_fake"`` in a spec (hidden option) or ``UNLEARNKIT_BENCH_RUNNER=unlearnkit_fake``.
Environment knobs:

* ``UNLEARNKIT_FAKE_SLEEP``: seconds each run sleeps (default 0);
* ``UNLEARNKIT_FAKE_CALLS``: a file to which every call appends one line (to count real invocations);
* ``UNLEARNKIT_FAKE_FAIL``: a method name whose runs raise ``RuntimeError``.

The records have the shape of evaluation.md §8.2 with deterministic, plausible numbers; they are not results.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .._io import sha256_json

FAKE_METHODS = ("fake_any", "fake_class_only")
FAKE_RUNNER = "unlearnkit_fake"


def register_fake_methods() -> None:
    """Register ``fake_any`` (class and random forgetting), ``fake_class_only`` and the runner (idempotent)."""
    from torch import nn

    from .runners import register_runner

    register_runner(FAKE_RUNNER, fake_run)

    from ..methods import METHODS, Method, MethodConfig, Requirements, register

    @dataclass(frozen=True, kw_only=True)
    class FakeConfig(MethodConfig):
        """Options of the fake methods.

        Args:
            lr: a positive number (checked, so specs can be tested for bad values).
            epochs: a positive integer.
        """

        lr: float = 0.1
        epochs: int = 1

        def validate(self) -> None:
            super().validate()
            self.check(self.lr > 0, f"`lr` must be > 0, got {self.lr}")
            self.check(self.epochs >= 1, f"`epochs` must be >= 1, got {self.epochs}")

    class _Fake(Method):
        Config = FakeConfig
        summary = "test double: returns the model unchanged"

        def unlearn(self, model: nn.Module, data: Any, ctx: Any = None) -> nn.Module:
            return model

    if "fake_any" not in METHODS:
        register("fake_any")(type("FakeAny", (_Fake,), {}))
    if "fake_class_only" not in METHODS:
        register("fake_class_only")(
            type("FakeClassOnly", (_Fake,), {"requires": Requirements(split_kinds=frozenset({"class"}))})
        )


@contextlib.contextmanager
def fake_methods_registered() -> Iterator[None]:
    """Register the fake methods for the duration of a ``with`` block, then remove them again."""
    from ..methods import METHODS

    before = [n for n in FAKE_METHODS if n in METHODS]
    register_fake_methods()
    try:
        yield
    finally:
        for n in FAKE_METHODS:
            if n not in before:
                METHODS._items.pop(n, None)  # the registry has no public unregister; tests only


def _rng(*parts: Any) -> random.Random:
    return random.Random(json.dumps(parts, sort_keys=True, default=str))


def fake_record(
    dataset: str,
    model: str,
    forget: str,
    method: str,
    *,
    overrides: dict[str, Any] | None = None,
    seed: int = 0,
    num_classes: int = 10,
    per_class: bool = True,
) -> dict[str, Any]:
    """A deterministic §8.2-shaped record (numbers depend on every argument)."""
    overrides = dict(overrides or {})
    classwise = forget.startswith("class:")
    forgotten = [int(c) for c in forget.split(":", 1)[1].split(",")] if classwise else []
    base = _rng(dataset, model, forget, seed)  # shared by every method of one (scenario, seed)
    rng = _rng(dataset, model, forget, method, overrides, seed)
    original = {
        "accuracy_forget": 99.0 + base.random(),
        "accuracy_retain": 99.0 + base.random(),
        "accuracy_test": 91.0 + base.random(),
        "mia_efficacy_forget": 2.0 + base.random(),
    }
    retrained: dict[str, Any] = {
        "accuracy_forget": (0.0 if classwise else 90.0 + base.random()),
        "accuracy_retain": 99.0 + base.random(),
        "accuracy_test": 90.5 + base.random(),
        "mia_efficacy_forget": (100.0 if classwise else 10.0 + base.random()),
    }
    skill = 0.5 + 4.0 * rng.random()  # how far this method lands from the retrained model
    unlearned: dict[str, Any] = {k: min(100.0, max(0.0, v + rng.uniform(-skill, skill))) for k, v in retrained.items()}
    unlearned["kl_to_retrained_forget"] = 0.05 * skill
    unlearned["js_to_retrained_forget"] = 0.01 * skill
    retrain_time = 60.0 + base.random()
    runtime = 0.5 + 10.0 * rng.random() if method != "retrain" else retrain_time
    unlearned["speedup_vs_retrained"] = retrain_time / runtime
    if per_class:
        pcs = [90.0 + 5.0 * rng.random() for _ in range(num_classes)]
        for c in forgotten:
            pcs[c] = rng.random() * skill
        unlearned["per_class_accuracy_test"] = pcs
        retrained["per_class_accuracy_test"] = [0.0 if c in forgotten else 91.0 for c in range(num_classes)]
    keys = ("accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget")
    gaps = {k: abs(unlearned[k] - retrained[k]) for k in keys}
    gaps["avg_gap_to_retrained"] = sum(gaps.values()) / 4
    return {
        "schema_version": "1.0",
        "run_id": "fake-" + sha256_json([dataset, model, forget, method, overrides, seed])[:16],
        "created_utc": "2026-01-01T00:00:00Z",
        "package": {"name": "unlearnkit", "version": "0.1.0"},
        "environment": {"device": "cpu", "device_name": "fake"},
        "task": {
            "kind": "classification",
            "scenario": "class" if classwise else "random",
            "dataset": dataset,
            "num_classes": num_classes,
            "forget": {"spec": forget, "size": 100, "classes": forgotten or None},
        },
        "model": {"arch": model},
        "method": {"name": method, "config": {"lr": 0.1, **overrides}},
        "evaluation_config": {"mia_flavour": "svc_confidence"},
        "seed": seed,
        "models": {
            "original": {"metrics": original},
            "retrained": {"metrics": retrained, "runtime_seconds": retrain_time},
            "unlearned": {"metrics": unlearned, "runtime_seconds": runtime},
        },
        "gaps_to_retrained": gaps,
        "noise_floor_avg_gap": 0.3 + 0.2 * base.random(),
        "metric_meta": {
            "accuracy_forget": {"unit": "%", "higher_is_better": None},
            "avg_gap_to_retrained": {"unit": "pp", "higher_is_better": False},
        },
    }


def fake_records(
    labels: tuple[str, ...] = ("fake_any", "scrub"),
    forgets: tuple[str, ...] = ("class:0", "random:0.1"),
    seeds: tuple[int, ...] = (0, 1, 2),
    per_class: bool = True,
) -> list[dict[str, Any]]:
    """Fake records with the bench block the runner adds, for report tests (synthetic / small_cnn)."""
    out = []
    for forget in forgets:
        for seed in seeds:
            for label in labels:
                rec = fake_record("synthetic", "small_cnn", forget, label, seed=seed, per_class=per_class)
                rec["bench"] = {
                    "run_key": f"{forget}-{label}-{seed}",
                    "dataset": "synthetic",
                    "model": "small_cnn",
                    "model_args": {},
                    "forget": forget,
                    "method": label,
                    "label": label,
                    "overrides": {},
                    "seed": seed,
                    "wall_seconds": 0.1,
                }
                out.append(rec)
    return out


def fake_run(
    dataset: str,
    model: str,
    forget: str,
    method: str,
    *,
    overrides: dict[str, Any],
    seed: int,
    model_kwargs: dict[str, Any] | None = None,
    metrics: list[str] | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool | None = None,
    noise_floor: bool = True,
    eval_cache: Any = None,
) -> dict[str, Any]:
    """Stand-in for `unlearnkit.pipeline.run_experiment` with the same signature; sleeps, then fakes a record."""
    calls = os.environ.get("UNLEARNKIT_FAKE_CALLS")
    if calls:
        line = (
            json.dumps(
                {
                    "dataset": dataset,
                    "model": model,
                    "forget": forget,
                    "method": method,
                    "seed": seed,
                    "overrides": overrides,
                    "model_kwargs": model_kwargs,
                    "metrics": metrics,
                    "device": device,
                    "data_dir": data_dir,
                    "progress": progress,
                }
            )
            + "\n"
        )
        fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
    time.sleep(float(os.environ.get("UNLEARNKIT_FAKE_SLEEP", "0") or 0))
    if os.environ.get("UNLEARNKIT_FAKE_FAIL") == method:
        raise RuntimeError(f"fake failure of {method}")
    return fake_record(dataset, model, forget, method, overrides=overrides, seed=seed)


@dataclass(frozen=True)
class FakeRunner:
    """A picklable fake runner for executors whose workers do not share this process's environment (Ray).

    Each call appends one line to ``state_dir/calls`` (when set), sleeps ``sleep`` seconds and returns
    `fake_record`. The first ``crash_times`` calls of method ``crash_method`` (counted over every process, in
    ``state_dir``) kill their own process with SIGKILL instead, as a worker that dies mid-task.
    """

    sleep: float = 0.0
    crash_method: str | None = None
    crash_times: int = 0
    state_dir: str | None = None

    def __call__(self, dataset: str, model: str, forget: str, method: str, **kw: Any) -> dict[str, Any]:
        import signal
        from pathlib import Path

        if self.state_dir:
            line = json.dumps({"method": method, "forget": forget, "seed": kw.get("seed"), "pid": os.getpid()})
            fd = os.open(Path(self.state_dir) / "calls", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
            if method == self.crash_method:
                calls = (Path(self.state_dir) / "calls").read_text().splitlines()
                if sum(json.loads(c)["method"] == method for c in calls) <= self.crash_times:
                    os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.sleep)
        return fake_record(dataset, model, forget, method, overrides=kw.get("overrides"), seed=kw.get("seed", 0))
