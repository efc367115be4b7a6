"""Benchmarks: a declarative TOML grid, a resumable runner and reports built from the records alone.

* `unlearnkit.bench.spec`: `load_spec(path)` reads and validates a spec (every problem at once) and
  `plan_runs(spec)` expands the grid into runs, each with a stable run key.
* `unlearnkit.bench.runner`: `run_bench(spec, out_dir)` runs the grid, appending one JSON line per finished
  run to ``records.jsonl``; rerunning skips finished runs, a killed bench resumes without loss or duplicates.
* `unlearnkit.bench.executors`: where the runs execute: one after the other in this process (default), or as
  Ray tasks on a local instance or a cluster (`unlearnkit.bench.ray_executor`, ``executor="ray"``); either way
  only `run_bench` writes the records.
* `unlearnkit.bench.report`: `build_report(dir)` turns ``records.jsonl`` into tables (markdown, CSV),
  plots (PNG) and one self-contained ``report.html``; it never loads a model.

The library (data, models, methods, evaluation) never imports this package; it sits on top.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BenchSpec", "MethodEntry", "Run", "build_report", "load_spec", "plan_runs", "read_records", "run_bench"]


def __getattr__(name: str) -> Any:  # lazy: `import unlearnkit.bench` must not pull torch or matplotlib
    if name in ("BenchSpec", "MethodEntry", "Run", "load_spec", "plan_runs"):
        from . import spec

        return getattr(spec, name)
    if name == "run_bench":
        from .runner import run_bench

        return run_bench
    if name == "read_records":
        from .records import read_records

        return read_records
    if name == "build_report":
        from .report import build_report

        return build_report
    raise AttributeError(f"module 'unlearnkit.bench' has no attribute {name!r}")
