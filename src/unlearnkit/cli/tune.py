"""``unlearnkit tune``: search a method's options (Optuna) against the retrained oracle on a validation split."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UnlearnkitError
from ._common import common, kv, no_cache, num, print_table, seed_arg, warn


def add_tune(sub: Any) -> None:
    p = sub.add_parser(
        "tune",
        help="search a method's options (Optuna) against the retrained oracle on a validation split",
        description="Search the method's [search] space (its preset file) with Optuna's TPE sampler, or every "
        "--grid combination with --sampler grid, for the smallest avg gap to the retrained model on a "
        "validation forget split (seed --validation-seed; use another class or random draw than the "
        "benchmark's), averaged over originals --seeds (not benchmark seeds). A trial whose unlearning takes "
        "more than --budget x the retraining time is pruned (or penalised). The study is stored in "
        "--storage (default study.db beside --out) and resumes when run again. Prints the ranking and a TOML "
        "preset block; with --out, writes both as JSON. Needs pip install 'unlearnkit[tune]'.",
    )
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", required=True, help="validation forget spec, e.g. class:2 or random:0.1")
    p.add_argument("--method", required=True, help="method name (see `unlearnkit list methods`)")
    p.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2,...",
        help="values to try for one option (repeatable; replaces the [search] space; sampler grid by default)",
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed override for every trial (repeatable)")
    p.add_argument("--sampler", choices=("tpe", "grid"), default=None, help="tpe (default) or grid (with --grid)")
    p.add_argument("--sampler-seed", type=seed_arg, default=0, help="seed of the sampler (default 0)")
    p.add_argument("--n-trials", type=int, default=None, help="trials in the study in all (default 30; grid: all)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument("--n-jobs", type=int, default=1, help="parallel trials (default 1)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite:///<--out folder>/study.db)")
    p.add_argument("--study-name", default=None, help="study name (default from method, data, split and seeds)")
    p.add_argument(
        "--budget",
        default="auto",
        help="unlearning time allowed, as a fraction of the retraining time (default 0.25 random, 0.10 class; "
        "none: no budget)",
    )
    p.add_argument(
        "--over-budget", choices=("prune", "penalise"), default="prune", help="what a trial over budget gets"
    )
    p.add_argument("--seeds", default="10,11", help="comma-separated original seeds averaged over (default 10,11)")
    p.add_argument("--validation-seed", type=seed_arg, default=100, help="seed of the validation split (default 100)")
    p.add_argument("--out", default=None, help="write the ranking and the preset block here (JSON)")
    no_cache(p)
    common(p)


def cmd_tune(args: argparse.Namespace) -> int:
    from ..jobs.tune import tune_job
    from ..tune import require_optuna

    require_optuna()  # before anything else: says how to install it
    grid = {k: [num(v) for v in vals.split(",") if v.strip()] for k, vals in kv(args.grid, "--grid").items()}
    base = {k: num(v) for k, v in kv(args.set).items()}
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UnlearnkitError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    bad = [s for s in seeds if not 0 <= s < 2**63]
    if bad:
        raise UnlearnkitError(f"--seeds must be integers in [0, 2^63), got {bad[0]}")
    budget: Any = args.budget
    if str(budget).lower() in ("none", "off", "inf"):
        budget = None
    elif budget != "auto":
        try:
            budget = float(budget)
        except ValueError:
            raise UnlearnkitError(f"--budget expects a fraction (e.g. 0.25), auto or none, got {budget!r}") from None
    res = tune_job(
        args.method,
        args.dataset,
        args.model,
        args.forget,
        out=args.out,
        storage=args.storage,
        grid=grid or None,
        seeds=seeds,
        validation_seed=args.validation_seed,
        device=args.device,
        data_dir=args.data_dir,
        base=base,
        sampler=args.sampler,
        sampler_seed=args.sampler_seed,
        n_trials=args.n_trials,
        timeout=args.timeout,
        n_jobs=args.n_jobs,
        study_name=args.study_name,
        budget=budget,
        over_budget=args.over_budget,
        on_event=lambda msg: warn("tune", msg),
    )
    rows = []
    for t in res.trials:
        gap = t["avg_gap"]
        note = t.get("pruned_by") or t.get("failure") or ("penalised" if t.get("penalised") else "")
        rows.append(
            {
                "trial": t["number"],
                **t["config"],
                "avg gap": "-" if gap is None else gap,
                "state": t["state"],
                "note": note,
            }
        )
    print_table(
        rows,
        title=f"{res.method} on {res.dataset}/{res.model}, validation {res.forget} "
        f"(split seed {res.validation_seed}, originals {args.seeds}), study {res.study_name}",
    )
    block = res.preset_block()
    print(f"\npreset block for src/unlearnkit/methods/presets/{res.method}.toml:\n{block}")
    print(f"\nreproduce: {res.command()}")
    return 0
