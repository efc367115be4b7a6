"""Speed-up of ``unlearnkit bench --executor ray`` over the sequential runner, on this machine (issue 28).

One small grid of independent runs (digits · small_cnn · class:0, seed 0, eight methods), run twice side by side
into fresh bench folders: first by the local sequential executor (torch's default threads), then by the Ray
executor on a local Ray instance with all cores (one run per core, one torch thread each). The original and the
oracles are trained into the model cache first and not timed, so both sides time only the runs (unlearning and
evaluation). The Ray column is given with and without starting Ray. Then, not timed, the sequential runner once
more with one torch thread (what each 1-CPU Ray task gets), to show which differences in the results come from
the thread count: at the same thread count the unlearned weights are identical. Prints a markdown table;
``--out FILE`` also writes it there.

    python benchmarks/ray_speedup.py                       # ~4 min on 2 cores with the digits models cached
    python benchmarks/ray_speedup.py --methods ft,rl --out benchmarks/ray_speedup.md

Needs ``pip install 'unlearnkit[ray]'``. Run it when nothing else heavy runs: the table records the load average
before and after, and a ratio measured on a shared machine says little.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_METHODS = "ft,rl,ga,neggrad_plus,scrub,salun,l1_sparse,ssd"


def spec_text(dataset: str, forget: str, seed: int, methods: list[str]) -> str:
    entries = "".join(f'\n[[methods]]\nname = "{m}"\n' for m in methods)
    return (
        f'name = "ray-speedup"\n[grid]\ndatasets = ["{dataset}"]\nmodels = ["small_cnn"]\n'
        f'forget = ["{forget}"]\nseeds = [{seed}]\n{entries}'
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--forget", default="class:0")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    p.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # one machine: Ray on the loopback address

    from unlearnkit.bench.ray_executor import INSTALL_HINT, ray_available
    from unlearnkit.bench.runner import run_bench
    from unlearnkit.bench.spec import load_spec, plan_runs
    from unlearnkit.pipeline import prepare_model

    if not ray_available():
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    with tempfile.TemporaryDirectory(prefix="ray-speedup-") as tmp:
        spec_path = Path(tmp) / "spec.toml"
        spec_path.write_text(spec_text(args.dataset, args.forget, args.seed, methods), encoding="utf-8")
        spec = load_spec(spec_path)
        first = plan_runs(spec)[0]
        t = time.perf_counter()
        for role in ("original", "retrained", "noise_floor"):  # not timed below: both sides load them
            prepare_model(args.dataset, "small_cnn", args.forget, first.method.name, role, seed=args.seed, device="cpu")
        prepare_s = time.perf_counter() - t
        load_before = os.getloadavg()

        t = time.perf_counter()
        local = run_bench(spec, Path(tmp) / "local", device="cpu", progress=False)
        local_s = time.perf_counter() - t

        import ray

        t = time.perf_counter()
        ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
        start_s = time.perf_counter() - t
        try:
            t = time.perf_counter()
            on_ray = run_bench(spec, Path(tmp) / "ray", device="cpu", progress=False, executor="ray")
            ray_s = time.perf_counter() - t
        finally:
            ray.shutdown()
        load_after = os.getloadavg()
        # not timed: the sequential runner again with one torch thread, as each 1-CPU Ray task has, to tell
        # executor effects from thread-count effects (same thread count: the same unlearned weights)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            one = run_bench(spec, Path(tmp) / "local1", device="cpu", progress=False)
        finally:
            torch.set_num_threads(threads)
        rows: dict[str, dict[str, tuple[float, str]]] = {}
        for name in ("local", "ray", "local1"):
            for line in (Path(tmp) / name / "records.jsonl").read_text().splitlines():
                rec = json.loads(line)
                gap = rec["gaps_to_retrained"]["avg_gap_to_retrained"]
                rows.setdefault(rec["bench"]["label"], {})[name] = (gap, rec["models"]["unlearned"]["sha256"])
    if not (local.ok and on_ray.ok and one.ok):
        print(f"some runs failed: {local.summary()}, {on_ray.summary()}, {one.summary()}", file=sys.stderr)
        return 1
    same = sum(r["ray"][1] == r["local1"][1] for r in rows.values())
    regen = "python benchmarks/ray_speedup.py"
    if args.methods != DEFAULT_METHODS:
        regen += f" --methods {args.methods}"
    cores = os.cpu_count()
    table = "\n".join(
        [
            f"| executor | wall (s), {len(methods)} runs | speed-up |",
            "|---|--:|--:|",
            f"| local (sequential, {threads} torch threads) | {local_s:.1f} | 1.00× |",
            f"| ray, runs only ({cores} tasks in flight, 1 thread each) | {ray_s:.1f} | {local_s / ray_s:.2f}× |",
            f"| ray, with starting Ray ({start_s:.1f} s) | {ray_s + start_s:.1f} "
            f"| {local_s / (ray_s + start_s):.2f}× |",
        ]
    )
    gap_rows = "\n".join(
        f"| {label} | {r['local'][0]:.2f} | {r['ray'][0]:.2f} | {r['local1'][0]:.2f} | "
        f"{'yes' if r['ray'][1] == r['local1'][1] else 'no'} |"
        for label, r in rows.items()
    )
    text = (
        f"# `--executor ray` against the sequential runner\n\n"
        f"{args.dataset} · small_cnn · {args.forget} · seed {args.seed}, methods {', '.join(methods)}; "
        f"{cores} cores ({platform.processor() or platform.machine()}), CPU, models cached first "
        f"({prepare_s:.0f} s, not timed). Load average (1/5/15 min) before: "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after: {' / '.join(f'{x:.2f}' for x in load_after)}.\n\n"
        f"{table}\n\n"
        f"Avg gap to the retrained model (pp) per run, and whether the Ray run's unlearned weights equal those of "
        f"the sequential runner restricted to one torch thread (not timed): {same} of {len(rows)} identical.\n\n"
        f"| method | local, {threads} threads | ray | local, 1 thread | ray = local 1 thread |\n"
        f"|---|--:|--:|--:|:-:|\n{gap_rows}\n\n"
        f"Regenerate: `{regen} --out benchmarks/ray_speedup.md`\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
