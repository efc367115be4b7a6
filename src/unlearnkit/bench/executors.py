"""How a bench's runs are executed: one after the other in this process (`LocalExecutor`, the default) or as tasks
on a Ray cluster (`unlearnkit.bench.ray_executor.RayExecutor`).

An executor only *computes*: `execute_run` turns one `Run` into a `RunOutcome` (the record, or the error) and never
writes a file. The driver (`unlearnkit.bench.runner.run_bench`) is the one writer of ``records.jsonl``: it receives
each outcome through `ExecutorHooks.finished` and appends the record, so the resume guarantee (a record only for
a finished run, none lost, none duplicated) is the same for every executor. `unlearnkit.bench.runner.make_executor`
picks one by name.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import DataNotFoundError, MissingDependencyError
from .runners import RunnerFn
from .spec import Run

if TYPE_CHECKING:
    from ..evaluation import EvaluationCache

_FATAL = (DataNotFoundError, MissingDependencyError, MemoryError)  # no point trying the next run


@dataclass(frozen=True)
class RunOptions:
    """What every run of one bench shares: the run function and the spec/CLI settings it is called with.

    Picklable (the runner is pickled by reference), so a Ray task receives it as it is.
    """

    runner: RunnerFn
    device: str = "auto"
    data_dir: str | None = None
    metrics: tuple[str, ...] | None = None
    audits: str | None = None
    oracles: int = 0
    first_seed: int = 0  # the noise floor is measured on the first seed's runs only
    trains_models: bool = False  # the runner is run_experiment: its models can be trained ahead (Ray executor)

    def kwargs(self, run: Run) -> dict[str, Any]:
        """The keyword arguments of the runner call for ``run`` (besides the five positional ones)."""
        return {
            "overrides": dict(run.method.overrides),
            "seed": run.seed,
            "model_kwargs": dict(run.model_args) or None,
            "metrics": list(self.metrics) if self.metrics else None,
            "device": self.device,
            "data_dir": self.data_dir,
            "progress": False,
            "noise_floor": run.seed == self.first_seed,
            **({"manipulation": run.manipulation} if run.manipulation else {}),
            **({"audits": self.audits} if self.audits is not None else {}),
            **({"oracles": self.oracles} if self.oracles else {}),
        }


@dataclass(frozen=True)
class RunOutcome:
    """One run's result: its record (finished) or its error (failed); ``fatal`` stops the bench."""

    run: Run
    record: dict[str, Any] | None
    wall_seconds: float
    error: str | None = None
    fatal: bool = False


def execute_run(run: Run, opts: RunOptions, eval_cache: EvaluationCache | None = None) -> RunOutcome:
    """Call the runner for ``run``; every exception becomes a failed outcome (one failed cell must not lose the rest
    of a long bench), except KeyboardInterrupt."""
    t = time.perf_counter()
    try:
        result = opts.runner(
            run.dataset,
            run.model,
            run.forget.arg,
            run.method.name,
            eval_cache=eval_cache,
            **opts.kwargs(run),
        )
        record = getattr(result, "record", result)  # run_experiment returns an Experiment(record, unlearned, split)
        if not isinstance(record, dict):
            raise TypeError(f"the runner returned {type(record).__name__}, expected a record dict")
    except KeyboardInterrupt:
        raise
    except _FATAL as exc:
        return RunOutcome(run, None, time.perf_counter() - t, f"fatal: {type(exc).__name__}: {exc}", fatal=True)
    except Exception as exc:
        return RunOutcome(run, None, time.perf_counter() - t, f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    return RunOutcome(run, dict(record), time.perf_counter() - t)


class ExecutorHooks(Protocol):
    """The driver's side of an execution (`unlearnkit.bench.runner`)."""

    def may_start(self) -> bool:
        """False once no new run may start (time budget spent, a fatal failure)."""
        ...

    def started(self, run: Run) -> None:
        """``run`` was started (local) or handed to the cluster (Ray)."""
        ...

    def finished(self, outcome: RunOutcome) -> None:
        """``run`` finished or failed: the driver records it (the only writer of ``records.jsonl``)."""
        ...


class Executor(Protocol):
    """Runs the pending runs of a bench and reports each outcome to the hooks, in any order."""

    name: str

    def check(self) -> None:
        """Raise `ConfigError` / `MissingDependencyError` for a setting that cannot work, before any compute."""
        ...

    def execute(self, runs: Sequence[Run], opts: RunOptions, hooks: ExecutorHooks) -> None: ...


class LocalExecutor:
    """One run after the other in this process, in grid order (the default executor)."""

    name = "local"

    def check(self) -> None:
        pass

    def execute(self, runs: Sequence[Run], opts: RunOptions, hooks: ExecutorHooks) -> None:
        from ..evaluation import EvaluationCache

        cache = EvaluationCache()  # every method of a cell is scored against the same original and retrained models
        for run in runs:
            if not hooks.may_start():
                return
            hooks.started(run)
            hooks.finished(execute_run(run, opts, cache))


__all__ = [
    "Executor",
    "ExecutorHooks",
    "LocalExecutor",
    "RunOptions",
    "RunOutcome",
    "execute_run",
]
