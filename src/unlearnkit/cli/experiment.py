"""``unlearnkit run``, ``unlearnkit eval`` and ``unlearnkit demo``: experiments against the retrained oracle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ._common import audits, common, confirm_cost, kv, manipulation, no_cache, print_record, warn


def add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate an unlearned checkpoint against the retrained one")
    p.add_argument("--forget", required=True, help="forget spec of the split the models were made for")
    p.add_argument("--model", required=True, help="unlearned checkpoint (.safetensors)")
    p.add_argument("--retrained", required=True, help="retrained-oracle checkpoint (.safetensors)")
    p.add_argument("--original", default=None, help="original checkpoint, to report its metrics too")
    p.add_argument("--metrics", default=None, help="comma-separated metric or audit names (default: the default suite)")
    p.add_argument("--out", required=True, help="output folder for record.json")
    audits(p, oracles=False)
    common(p)


def add_run(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="unlearn with a method and evaluate against the retrained oracle",
        description="Take the original and the retrained oracle from the cache (training them if "
        "missing), unlearn, evaluate with the default suite, print a table and write record.json, "
        "the unlearned weights and the split JSON.",
    )
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", required=True, help="forget spec")
    p.add_argument("--method", required=True, help="method name (see `unlearnkit list methods`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a method option (repeatable)")
    p.add_argument("--preset", default=None, help="named preset of the method (default: tuned for dataset/model/kind)")
    p.add_argument("--original", default=None, help="your own original checkpoint instead of the cached one")
    p.add_argument(
        "--no-noise-floor",
        action="store_true",
        help="skip the second retrained model (the noise floor): one retraining instead of two",
    )
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=16")
    p.add_argument("--metrics", default=None, help="extra metric or audit names, comma-separated")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<model>-<method>-<spec>-s<seed>)")
    audits(p)
    manipulation(p)
    no_cache(p)
    common(p)


def add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="the Fashion-MNIST demo: original vs retrained vs unlearned")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: a representative few)")
    p.add_argument("--forget", default="class:0", help="forget spec (default class:0)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    no_cache(p)
    common(p, dataset=False)


def cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .._io import check_output_dir
    from ..jobs.run import run_job, save_experiment
    from ..jobs.task import resolve_run_task
    from ..models import MODELS, parse_model_args

    overrides = kv(args.set)
    confirm_cost(args.audits, args.oracles, args.yes, "run")  # before any compute
    MODELS.get(args.model)
    model_kwargs = parse_model_args(args.model, kv(args.model_arg, "--model-arg"))
    spec_tag = args.forget.replace(":", "").replace(",", "_").replace("/", "_")
    if args.manipulation:
        from .._io import sha256_json
        from ..data.manipulations import parse_manipulation

        m = parse_manipulation(args.manipulation)
        spec_tag += f"-{m.kind}{sha256_json(str(m))[:6]}" if m is not None else ""
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{args.dataset}-{args.model}-{args.method}-{spec_tag}-s{args.seed}"
    )
    check_output_dir(out)
    task = resolve_run_task(
        args.dataset,
        args.model,
        args.forget,
        args.method,
        overrides=overrides,
        preset=args.preset,
        seed=args.seed,
        model_kwargs=model_kwargs,
        metrics=args.metrics.split(",") if args.metrics else None,
        audits=args.audits,
        oracles=args.oracles or 0,
        manipulation=args.manipulation,
        device=args.device,
        data_dir=args.data_dir,
        original=args.original,
    )
    exp = run_job(task, noise_floor=not args.no_noise_floor, on_event=lambda msg: warn("", msg))
    print_record(exp.record)
    save_experiment(exp, out)
    for w in exp.record.get("warnings", []):
        print(f"unlearnkit run: warning: {w}", file=sys.stderr)
    Console(stderr=True).print(f"wrote {out}/record.json, unlearned.safetensors, split.json")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..data import parse_forget_spec
    from ..evaluation import write_record
    from ..evaluation.checkpoints import check_checkpoint_roles, evaluate_checkpoints
    from ..evaluation.levels import resolve_audits

    resolve_audits(args.audits)  # an unknown audit name fails before any checkpoint is read
    forget = parse_forget_spec(args.forget)  # parsed once (an indices file read once) for both steps
    check_checkpoint_roles(
        args.model, args.retrained, args.original, dataset=args.dataset, forget=forget, seed=args.seed,
        data_dir=args.data_dir,
    )  # fmt: skip
    record = evaluate_checkpoints(
        args.model,
        args.retrained,
        dataset=args.dataset,
        forget=forget,
        seed=args.seed,
        original=args.original,
        metrics=args.metrics,
        device=args.device,
        data_dir=args.data_dir,
        audits=args.audits,
    )
    path = write_record(record, Path(args.out) / "record.json")
    task = record["task"]
    print_record(record, title=f"{task['dataset']} {task['forget']['spec']} seed {args.seed}")
    print(f"record: {path}")
    return 0


DEMO_METHODS = ("ft", "neggrad_plus", "salun", "sfr_on")


def cmd_demo(args: argparse.Namespace) -> int:
    """Fashion-MNIST small_cnn: original vs retrained vs a few methods, one table."""
    from rich.console import Console
    from rich.table import Table

    from ..evaluation import EvaluationCache
    from ..methods import METHODS
    from ..pipeline import run_experiment, save_experiment

    methods = args.methods.split(",") if args.methods else [m for m in DEMO_METHODS if m in METHODS]
    for name in methods:
        METHODS.get(name)
    rows: list[list[str]] = []
    noise = None
    cache = EvaluationCache()  # the original and retrained models are scored once, not once per method
    for name in methods:
        exp = run_experiment(
            "fashion_mnist",
            "small_cnn",
            args.forget,
            name,
            seed=args.seed,
            device=args.device,
            data_dir=args.data_dir,
            eval_cache=cache,
        )
        save_experiment(exp, Path(args.out) / name)
        rec = exp.record
        if not rows:
            for role in ("original", "retrained"):
                rows.append(_demo_row(role, rec["models"][role]["metrics"], rec["models"][role].get("runtime_seconds")))
            noise = rec.get("noise_floor_avg_gap")
        mu = rec["models"]["unlearned"]
        rows.append(
            _demo_row(
                name, mu["metrics"], mu.get("runtime_seconds"), rec["gaps_to_retrained"].get("avg_gap_to_retrained")
            )
        )
    floor = "" if noise is None else f" — noise floor (two retrained seeds): {noise:.2f} pp"
    table = Table(title=f"Fashion-MNIST, small_cnn, forget {args.forget}, seed {args.seed}{floor}")
    for col in ("model", "FA", "RA", "TA", "MIA-eff.", "avg gap", "seconds"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)
    Console(stderr=True).print(f"records and weights in {args.out}/<method>/")
    return 0


def _demo_row(name: str, m: dict[str, Any], seconds: float | None, gap: float | None = None) -> list[str]:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    return [
        name,
        f(m.get("accuracy_forget")),
        f(m.get("accuracy_retain")),
        f(m.get("accuracy_test")),
        f(m.get("mia_efficacy_forget")),
        f(gap),
        f(seconds),
    ]
