"""``unlearnkit bench`` and ``unlearnkit report``: benchmark grids from a TOML spec, and their reports."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._common import audits, manipulation, no_cache


def add_bench(sub: Any) -> None:
    p = sub.add_parser("bench", help="run a benchmark grid from a TOML spec (resumable)")
    p.add_argument("spec", help="benchmark spec (.toml)")
    p.add_argument("--out", required=True, help="output folder; records.jsonl is appended there")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument(
        "--part",
        type=_part,
        default=None,
        metavar="I/N",
        help="run only the I-th of N parts of the grid (whole cells dealt round-robin, so a cell's methods share "
        "its models); e.g. --part 1/4, then 2/4 … into the same --out",
    )
    p.add_argument(
        "--max-minutes",
        type=_minutes,
        default=None,
        metavar="M",
        help="start no new run after M minutes (the run in flight is recorded); rerun the same command to continue",
    )
    ray = p.add_argument_group("executor", "where the runs execute (records are written by this process only)")
    ray.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: one run after the other in this process (default); ray: each run a Ray task, in parallel "
        "(needs pip install 'unlearnkit[ray]')",
    )
    ray.add_argument(
        "--address",
        default=None,
        metavar="auto|ray://HOST:PORT",
        help="the Ray cluster: auto joins the one `ray start --head` started on this machine, ray://HOST:PORT a "
        "remote one (default: $RAY_ADDRESS or a cluster started here, else a local Ray instance for this bench)",
    )
    ray.add_argument(
        "--max-parallel", type=_positive_int, default=None, metavar="N", help="at most N runs in flight (Ray)"
    )
    ray.add_argument(
        "--num-cpus",
        type=float,
        default=None,
        metavar="C",
        help="CPUs each run declares (Ray; default 1 or the spec's [resources])",
    )
    ray.add_argument(
        "--num-gpus",
        type=float,
        default=None,
        metavar="G",
        help="GPUs each run declares; runs then land only on GPU nodes (Ray; default 0 or the spec's [resources])",
    )
    manipulation(p, " (replaces the spec's grid.manipulations)")
    audits(p, note=" (replaces the spec's value)")
    no_cache(p)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, e.g. --max-parallel 4 (got {text!r})")
    return int(text)


def _part(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not (sep and i.strip().isdigit() and n.strip().isdigit() and 1 <= int(i) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, e.g. --part 1/4 (got {text!r})")
    return int(i), int(n)


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of minutes >= 0, e.g. --max-minutes 45 (got {text!r})")
    return value


def add_report(sub: Any) -> None:
    p = sub.add_parser("report", help="tables, plots and report.html from a bench folder's records")
    p.add_argument("dir", help="bench output folder holding records.jsonl")
    p.add_argument("--out", default=None, help="report folder (default DIR/report)")


def cmd_bench(args: argparse.Namespace) -> int:
    """0 when every run is recorded or skipped, 1 when some failed, 130 on Ctrl-C."""
    from dataclasses import replace

    from ..bench.runner import run_bench
    from ..bench.spec import check_audits, load_spec

    spec = load_spec(args.spec)
    if args.manipulation is not None:
        from ..data.manipulations import parse_manipulation

        m = parse_manipulation(args.manipulation)
        spec = replace(spec, manipulations=(str(m) if m is not None else None,))
    if args.audits is not None or args.oracles is not None:
        spec = replace(
            spec,
            audits=args.audits if args.audits is not None else spec.audits,
            oracles=args.oracles if args.oracles is not None else spec.oracles,
        )
        check_audits(spec.audits, spec.oracles)
    from ._common import confirm_cost

    confirm_cost(spec.audits, spec.oracles, args.yes, "bench")  # per grid run; before any compute
    executor = _executor(args, spec)  # Ray missing, bad resources: refused here, before any compute
    try:
        result = run_bench(
            spec,
            args.out,
            device=args.device,
            data_dir=args.data_dir,
            progress=False if args.no_progress else None,
            part=args.part,
            max_minutes=args.max_minutes,
            executor=executor,
        )
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result.summary()))
    if result.count("failed"):
        print(
            f"unlearnkit bench: {result.count('failed')} run(s) failed (see bench.json); rerun the same command "
            "to retry them",
            file=sys.stderr,
        )
        return 1
    return 0


def _executor(args: argparse.Namespace, spec: Any) -> Any:
    from ..bench.runner import make_executor
    from ..errors import ConfigError

    ray_flags = {
        "--address": args.address,
        "--max-parallel": args.max_parallel,
        "--num-cpus": args.num_cpus,
        "--num-gpus": args.num_gpus,
    }
    given = [flag for flag, value in ray_flags.items() if value is not None]
    if args.executor == "local" and given:
        raise ConfigError(f"{', '.join(given)} only apply to --executor ray; add --executor ray or drop them")
    res = spec.resources if args.executor == "ray" else {}
    return make_executor(
        args.executor,
        address=args.address,
        max_parallel=args.max_parallel,
        num_cpus=args.num_cpus if args.num_cpus is not None else res.get("num_cpus"),
        num_gpus=args.num_gpus if args.num_gpus is not None else res.get("num_gpus"),
        device=args.device,
    )


def cmd_report(args: argparse.Namespace) -> int:
    from ..bench.report import build_report

    out = build_report(args.dir, args.out)
    print(
        json.dumps(
            {"report": str(out / "report.html"), "tables": str(out / "tables.md"), "csv": str(out / "tables.csv")}
        )
    )
    return 0
