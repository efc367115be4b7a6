"""The bench runner: runs a spec's grid, one record line per finished run, resumable after any crash.

Folder layout (``--out DIR``):

* ``records.jsonl``: one §8.2 record per finished run, plus ``record["bench"]`` (run key, grid cell, wall
  time). Appended atomically (see `unlearnkit.bench.records`).
* ``spec.toml``: a copy of the spec, written at the start.
* ``bench.json``: written at the end (also after Ctrl-C or a failed run): total wall time, every run's status
  (done, done earlier, skipped, failed) and wall time.
* ``.bench.lock``: an advisory lock; a second bench on the same folder is refused instead of duplicating runs.

Each run is identified by its run key (`unlearnkit.bench.spec.run_key`); a key already in ``records.jsonl``
is not run again. A run is recorded only after it finished, so a bench killed at any moment (even
``kill -9``) loses at most the run in flight, which the next invocation redoes: no record lost, none
duplicated.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._io import sha256_bytes, write_json_atomic, write_text_atomic
from ..errors import ConfigError
from ..progress import progress_enabled
from .executors import Executor, LocalExecutor, RunOptions, RunOutcome
from .records import RECORDS_FILE, append_record, make_readable, read_records, record_key, repair_tail
from .runners import RunnerFn, resolve_runner
from .spec import BenchSpec, Run, load_spec, plan_runs

RUNNER_ENV = "UNLEARNKIT_BENCH_RUNNER"  # name of a registered runner replacing run_experiment (tests, dry runs)
EXECUTORS = ("local", "ray")


@dataclass
class RunStatus:
    run: Run
    status: str  # "done" | "done_earlier" | "skipped" | "failed" | "pending"
    wall_seconds: float | None = None
    message: str | None = None
    record: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {**self.run.describe(), "status": self.status, "wall_seconds": self.wall_seconds}
        if self.message:
            d["message"] = self.message
        return d


@dataclass
class BenchResult:
    """What `run_bench` did, also written to ``bench.json``."""

    out_dir: Path
    statuses: list[RunStatus] = field(default_factory=list)
    total_wall_seconds: float = 0.0
    interrupted: bool = False

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.statuses)

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.count("failed") == 0 and self.count("pending") == 0

    def summary(self) -> dict[str, Any]:
        """Counts per status, the number of records in the folder and the wall time (what ``unlearnkit bench``
        prints)."""
        n_records = len(read_records(self.out_dir / RECORDS_FILE, warn=False))
        return {
            "out": str(self.out_dir),
            "records": n_records,
            **{k: self.count(k) for k in ("done", "done_earlier", "skipped", "failed")},
            "wall_seconds": round(self.total_wall_seconds, 2),
        }


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    fd = os.open(out_dir / ".bench.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another bench is running on {out_dir} (it holds {out_dir / '.bench.lock'}); "
                "wait for it or use another --out folder"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock; the kernel also releases it if we are killed


def _utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_bench(
    spec: BenchSpec | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    device: str = "auto",
    data_dir: str | None = None,
    progress: bool | None = None,
    runner: RunnerFn | None = None,
    console: Any = None,
    part: tuple[int, int] | None = None,
    max_minutes: float | None = None,
    executor: str | Executor = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
) -> BenchResult:
    """Run every pending cell of a bench grid, appending one record per finished run to ``out_dir``.

    Args:
        spec: a `BenchSpec` or the path of a TOML spec.
        out_dir: the bench folder (created); holds ``records.jsonl``, ``spec.toml``, ``bench.json``.
        device: passed to every run ("auto", "cpu", "cuda", "cuda:N").
        data_dir: dataset folder passed to every run.
        progress: show a progress bar over runs (default: on unless UNLEARNKIT_PROGRESS=0).
        runner: the function doing one run (default: the spec's hidden ``runner``, then
            ``$UNLEARNKIT_BENCH_RUNNER``, then `unlearnkit.pipeline.run_experiment`).
        console: a rich Console for the per-run lines (default: stderr).
        part: ``(i, n)``: run only the i-th (1-based) of n parts of the grid. Parts are whole cells (dataset,
            model, forget spec, manipulation, seed), dealt round-robin in grid order, so the methods of a cell
            share its original and oracles and a part is the same on every invocation.
        max_minutes: start no new run after this many minutes (the runs in flight finish and are recorded);
            rerun the same command to continue.
        executor: ``"local"`` (default: one run after the other in this process), ``"ray"`` (each run a Ray
            task, see `unlearnkit.bench.ray_executor`), or an `unlearnkit.bench.executors.Executor`.
        address, max_parallel, num_cpus, num_gpus: the Ray executor's cluster address (None: what
            ``ray.init()`` finds, else a local Ray instance for this bench), runs in flight at most, and the
            resources each run declares (default: the spec's ``[resources]``, else 1 CPU and no GPU).

    Returns:
        A `BenchResult` with the status of every run. Failed runs are not recorded, so rerunning the same
        command retries them.
    """
    from rich.console import Console
    from rich.markup import escape

    if not isinstance(spec, BenchSpec):
        spec = load_spec(spec)
    if isinstance(executor, str):
        if executor == "ray":
            num_cpus = spec.resources.get("num_cpus") if num_cpus is None else num_cpus
            num_gpus = spec.resources.get("num_gpus") if num_gpus is None else num_gpus
        executor = make_executor(
            executor, address=address, max_parallel=max_parallel, num_cpus=num_cpus, num_gpus=num_gpus, device=device
        )
    runner_name = spec.runner or os.environ.get(RUNNER_ENV) or None
    opts = RunOptions(
        runner=runner or resolve_runner(runner_name),
        device=device,
        data_dir=data_dir,
        metrics=spec.metrics,
        audits=spec.audits,
        oracles=spec.oracles,
        first_seed=spec.seeds[0],
        trains_models=runner is None and runner_name is None,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = console or Console(stderr=True, highlight=False, soft_wrap=True)
    show_bar = progress_enabled(progress)
    result = BenchResult(out)
    records_path = out / RECORDS_FILE
    started, t0 = _utc(), time.perf_counter()

    with _locked(out):
        cut = repair_tail(records_path)
        if cut:
            console.print(
                f"[yellow]records.jsonl ended in a torn line ({cut} bytes, an interrupted append); "
                "removed it, that run will be redone[/]"
            )
        earlier = {record_key(r): r for r in read_records(records_path)}
        make_readable([write_text_atomic(out / "spec.toml", spec.source_text)])

        runs = select_part(plan_runs(spec), part)
        for run in runs:
            if run.skip_reason:
                result.statuses.append(RunStatus(run, "skipped", message=run.skip_reason))
            elif run.key in earlier:
                wall = (earlier[run.key].get("bench") or {}).get("wall_seconds")
                result.statuses.append(RunStatus(run, "done_earlier", wall))
            else:
                result.statuses.append(RunStatus(run, "pending"))
        pending = [s for s in result.statuses if s.status == "pending"]
        head = f"bench {escape(spec.name)}: " if spec.name else "bench: "
        where = getattr(executor, "address", None)
        via = (" on Ray" + (f" at {escape(where)}" if where else "")) if executor.name == "ray" else ""
        console.print(
            f"{head}{len(runs)} runs: {result.count('done_earlier')} done earlier, "
            f"{result.count('skipped')} skipped, {len(pending)} to run{via} -> {escape(str(out))}"
        )
        for s in result.statuses:
            if s.status == "skipped":
                console.print(f"  [dim]skipped[/] {escape(s.run.title)}: {escape(s.message or '')}")

        try:
            with _progress(show_bar, len(pending), console) as bar:
                deadline = t0 + max_minutes * 60 if max_minutes is not None else None
                driver = _Driver(pending, records_path, console, bar, deadline, max_minutes)
                executor.execute([s.run for s in pending], opts, driver)
        except KeyboardInterrupt:
            result.interrupted = True
            console.print("[yellow]interrupted; finished runs are recorded, rerun the same command to resume[/]")
        finally:
            result.total_wall_seconds = time.perf_counter() - t0
            _write_bench_json(out, spec, result, started)
    if result.interrupted:
        raise KeyboardInterrupt
    console.print(
        f"bench finished in {result.total_wall_seconds:.1f} s: {result.count('done')} done, "
        f"{result.count('done_earlier')} done earlier, {result.count('skipped')} skipped, "
        f"{result.count('failed')} failed"
    )
    return result


class _Driver:
    """The executor's hooks: the only writer of ``records.jsonl``, the console lines and the progress bar."""

    def __init__(
        self,
        pending: list[RunStatus],
        records_path: Path,
        console: Any,
        bar: Any,
        deadline: float | None,
        max_minutes: float | None,
    ) -> None:
        self.by_key = {s.run.key: s for s in pending}
        self.records_path, self.console, self.bar = records_path, console, bar
        self.deadline, self.max_minutes = deadline, max_minutes
        self.running: dict[str, Run] = {}
        self.finished_count = 0
        self.stopped = False

    def may_start(self) -> bool:
        if self.stopped:
            return False
        if self.deadline is not None and time.perf_counter() > self.deadline:
            left = sum(s.status == "pending" for s in self.by_key.values()) - len(self.running)
            self.console.print(
                f"[yellow]time budget of {self.max_minutes:g} min spent; {left} runs left, "
                "rerun the same command to continue[/]"
            )
            self.stopped = True
            return False
        return True

    def started(self, run: Run) -> None:
        self.running[run.key] = run
        self._describe()

    def finished(self, outcome: RunOutcome) -> None:
        from rich.markup import escape

        run = outcome.run
        status = self.by_key[run.key]
        self.running.pop(run.key, None)
        _record(outcome, status, self.records_path)
        self.finished_count += 1
        tag = "[green]done[/]" if status.status == "done" else "[red]FAILED[/]"
        extra = f": {status.message}" if status.status == "failed" else _summary(status)
        line = f"{escape(run.title)} ({status.wall_seconds or 0:.1f} s){escape(extra or '')}"
        self.console.print(f"  {self.finished_count}/{len(self.by_key)} {tag} {line}")
        self.bar.advance()
        self._describe()
        if outcome.fatal:
            self.stopped = True

    def _describe(self) -> None:
        from rich.markup import escape

        names = [_short(r) for r in self.running.values()]
        if len(names) > 1:
            shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
            self.bar.describe(escape(f"{len(names)} in flight: {shown}"))
        else:
            self.bar.describe(escape(names[0] if names else ""))


def _short(run: Run) -> str:
    on = f" on {run.manipulation.split(':')[0]}" if run.manipulation else ""
    return f"{run.method.label} {run.forget.spec}{on} s{run.seed}"


def make_executor(
    name: str = "local",
    *,
    address: str | None = None,
    max_parallel: int | None = None,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    device: str = "auto",
) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); the options other than ``name`` are Ray's.

    Raises `ConfigError` for an unknown name or a Ray option given to the local executor, and
    `MissingDependencyError` (with the pip command) when ``ray`` is asked for but not installed.
    """
    if name == "local":
        given = [
            flag
            for flag, value in (
                ("address", address),
                ("max_parallel", max_parallel),
                ("num_cpus", num_cpus),
                ("num_gpus", num_gpus),
            )
            if value is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} only apply to the Ray executor; add executor='ray' (--executor ray) or drop them"
            )
        return LocalExecutor()
    if name == "ray":
        from .ray_executor import RayExecutor

        ex = RayExecutor(
            address=address, max_parallel=max_parallel, num_cpus=num_cpus, num_gpus=num_gpus, device=device
        )
        ex.check()
        return ex
    raise ConfigError(f"unknown executor {name!r}; choose one of {', '.join(EXECUTORS)}")


def select_part(runs: list[Run], part: tuple[int, int] | None) -> list[Run]:
    """The runs of part ``(i, n)``: grid cells dealt round-robin in order of first appearance (all without a part)."""
    if part is None:
        return runs
    i, n = part
    if not 1 <= i <= n:
        raise ConfigError(f"part {i}/{n}: expected i/n with 1 <= i <= n, e.g. --part 1/4")
    cells: dict[tuple[Any, ...], int] = {}
    for r in runs:
        cells.setdefault(_cell(r), len(cells))
    return [r for r in runs if cells[_cell(r)] % n == i - 1]


def _cell(run: Run) -> tuple[Any, ...]:
    return (run.dataset, run.model, repr(sorted(run.model_args.items())), run.forget.spec, run.manipulation, run.seed)


def _record(outcome: RunOutcome, status: RunStatus, records_path: Path) -> None:
    """Append a finished run's record (with its bench block) or mark the run failed; the driver's only write."""
    status.wall_seconds = outcome.wall_seconds
    if outcome.record is None:
        status.status, status.message = "failed", outcome.error or "failed"
        return
    record = dict(outcome.record)
    record["bench"] = {**status.run.describe(), "wall_seconds": outcome.wall_seconds, "finished_utc": _utc()}
    append_record(records_path, record)
    status.status, status.message, status.record = "done", None, record


def _summary(status: RunStatus) -> str:
    rec = status.record or {}
    gap = (rec.get("gaps_to_retrained") or {}).get("avg_gap_to_retrained")
    return f" avg gap {gap:.2f}" if isinstance(gap, (int, float)) else ""


class _NoBar:
    def describe(self, text: str) -> None:
        pass

    def advance(self) -> None:
        pass


class _RichBar:
    def __init__(self, progress: Any, task: Any) -> None:
        self._p, self._t = progress, task

    def describe(self, text: str) -> None:
        self._p.update(self._t, description=text)

    def advance(self) -> None:
        self._p.update(self._t, advance=1)


@contextlib.contextmanager
def _progress(enabled: bool, total: int, console: Any) -> Iterator[Any]:
    """A rich bar over runs with elapsed time and ETA; per-run lines print above it."""
    if not enabled or total == 0:
        yield _NoBar()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("runs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
        console=console,
    ) as p:
        yield _RichBar(p, p.add_task("", total=total))


def _write_bench_json(out: Path, spec: BenchSpec, result: BenchResult, started: str) -> None:
    walls = [s.wall_seconds for s in result.statuses if s.status in ("done", "done_earlier") and s.wall_seconds]
    path = write_json_atomic(
        out / "bench.json",
        {
            "spec": "spec.toml",
            "spec_sha256": sha256_bytes(spec.source_text.encode()),
            "name": spec.name,
            "started_utc": started,
            "finished_utc": _utc(),
            "interrupted": result.interrupted,
            "total_wall_seconds": result.total_wall_seconds,
            "sum_run_wall_seconds": sum(walls),  # over every recorded run, earlier invocations included
            "counts": {k: result.count(k) for k in ("done", "done_earlier", "skipped", "failed", "pending")},
            "runs": [s.to_dict() for s in result.statuses],
        },
    )
    make_readable([path])


__all__ = ["EXECUTORS", "RUNNER_ENV", "BenchResult", "RunStatus", "make_executor", "run_bench"]
