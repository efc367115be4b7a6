"""The `unlearnkit` command: parses arguments and calls the library; no logic of its own.

Every verb validates its inputs before any compute and exits non-zero with a one-line message on bad
input (exit 2), writing no partial files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import UnlearnkitError

EPILOG = """forget specs: class:3 | class:3,7 | random:0.1 | indices:FILE (JSON list or one index per line)
examples:
  unlearnkit train --dataset fashion_mnist --model small_cnn --seed 0 --out runs/original
  unlearnkit run --dataset fashion_mnist --model small_cnn --forget class:0 --method salun --out runs/salun
  unlearnkit list methods"""


def _common(p: argparse.ArgumentParser, *, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", required=True, help="dataset name (see `unlearnkit list datasets`)")
        p.add_argument("--data-dir", default=None, help="folder with the dataset files (else $UNLEARNKIT_DATA, "
                       "Debian's /usr/share/datasets, torchvision layout)")
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the model init and the method (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _kv(items: Sequence[str] | None, what: str = "--set") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UnlearnkitError(f"{what} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unlearnkit", description="Machine unlearning for image classifiers: train, unlearn, evaluate against "
        "the retrained model, benchmark.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"unlearnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list datasets, models, methods or metrics")
    p.add_argument("what", choices=["datasets", "models", "methods", "metrics"])

    p = sub.add_parser("train", help="train an original model, or with --forget the retrained oracle (cached)",
                       description="Train on the full training set (original) or, with --forget, on the retain set "
                       "only (the retrained oracle). Results are cached by (dataset, model, recipe, split, seed); "
                       "the same call returns from the cache in seconds.")
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", default=None, help="forget spec; train the retrained oracle on the retain set")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--recipe", action="append", metavar="KEY=VALUE", help="override any recipe field (repeatable)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=16")
    p.add_argument("--no-cache", action="store_true", help="train even when a cached model exists")
    p.add_argument("--out", required=True, help="output folder: model.safetensors, meta.json, split.json")
    _common(p)

    p = sub.add_parser("fetch", help="download a dataset from its official source, checking SHA-256")
    p.add_argument("dataset", choices=["fashion_mnist"])
    p.add_argument("--data-dir", required=True, help="folder to write the files into")

    p = sub.add_parser("eval", help="evaluate an unlearned checkpoint against the retrained one")
    p.add_argument("--forget", required=True, help="forget spec of the split the models were made for")
    p.add_argument("--model", required=True, help="unlearned checkpoint (.safetensors)")
    p.add_argument("--retrained", required=True, help="retrained-oracle checkpoint (.safetensors)")
    p.add_argument("--original", default=None, help="original checkpoint, to report its metrics too")
    p.add_argument("--metrics", default=None, help="comma-separated metric or audit names (default: the default suite)")
    p.add_argument("--out", required=True, help="output folder for record.json")
    _common(p)

    p = sub.add_parser("run", help="unlearn with a method and evaluate against the retrained oracle",
                       description="Take the original and the retrained oracle from the cache (training them if "
                       "missing), unlearn, evaluate with the default suite, print a table and write record.json, "
                       "the unlearned weights and the split JSON.")
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", required=True, help="forget spec")
    p.add_argument("--method", required=True, help="method name (see `unlearnkit list methods`)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a method option (repeatable)")
    p.add_argument("--preset", default=None, help="named preset of the method (default: tuned for dataset/model/kind)")
    p.add_argument("--original", default=None, help="your own original checkpoint instead of the cached one")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=16")
    p.add_argument("--metrics", default=None, help="extra metric or audit names, comma-separated")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<model>-<method>-<spec>-s<seed>)")
    _common(p)

    p = sub.add_parser("tune", help="grid-search a method's options against the retrained oracle on a validation split",
                       description="Rank every combination of --grid values by the avg gap to the retrained model on "
                       "a validation forget split (seed --validation-seed, away from the benchmark seeds), starting "
                       "from the method's preset. Prints the ranking and, with --out, writes it as JSON with a TOML "
                       "preset block for the best config.")
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", required=True, help="forget spec to validate on, e.g. class:5 or random:0.1")
    p.add_argument("--method", required=True, help="method name (see `unlearnkit list methods`)")
    p.add_argument("--grid", action="append", required=True, metavar="KEY=V1,V2,...",
                   help="values to try for one option (repeatable; every combination is run)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed override for every config (repeatable)")
    p.add_argument("--seeds", default="0", help="comma-separated model seeds averaged over (default 0)")
    p.add_argument("--validation-seed", type=int, default=100, help="seed of the validation split (default 100)")
    p.add_argument("--out", default=None, help="write the ranking here (JSON)")
    _common(p)

    p = sub.add_parser("demo", help="the Fashion-MNIST demo: original vs retrained vs unlearned")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: a representative few)")
    p.add_argument("--forget", default="class:0", help="forget spec (default class:0)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    _common(p, dataset=False)

    p = sub.add_parser("bench", help="run a benchmark grid from a TOML spec (resumable)")
    p.add_argument("spec", help="benchmark spec (.toml)")
    p.add_argument("--out", required=True, help="output folder; records.jsonl is appended there")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")

    p = sub.add_parser("report", help="tables, plots and report.html from a bench folder's records")
    p.add_argument("dir", help="bench output folder holding records.jsonl")
    p.add_argument("--out", default=None, help="report folder (default DIR/report)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if getattr(args, "no_progress", False):
        import os

        os.environ["UNLEARNKIT_PROGRESS"] = "0"
    try:
        return int(globals()[f"_cmd_{args.command}"](args) or 0)
    except UnlearnkitError as exc:
        print(f"unlearnkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------------------------------ handlers
def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for col in rows[0]:
        table.add_column(str(col))
    for r in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console().print(table)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        from .data import DATASETS, dataset_summary

        _print_table([{"name": n, "summary": dataset_summary(n)} for n in DATASETS.names()], "datasets")
    elif args.what == "models":
        from .models import MODEL_SUMMARIES, MODELS

        _print_table([{"name": n, "summary": MODEL_SUMMARIES.get(n, "")} for n in MODELS.names()], "models")
    elif args.what == "methods":
        from .methods import method_table

        _print_table(method_table(), "methods")
    else:
        from .evaluation import metric_table  # type: ignore[attr-defined]

        _print_table(metric_table(), "metrics")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data import load_dataset, split_for
    from .models import MODELS
    from .oracle import export, train_or_load
    from .training import default_recipe

    MODELS.get(args.model)  # unknown names fail before loading data
    bundle = load_dataset(args.dataset, args.data_dir)
    split = split_for(bundle, args.forget, args.seed)
    recipe = default_recipe(bundle.info.name, args.model)
    overrides: dict[str, Any] = {k: _num(v) for k, v in _kv(args.recipe, "--recipe").items()}
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if overrides:
        try:
            recipe = replace(recipe, **overrides)
        except TypeError as exc:
            raise UnlearnkitError(f"bad --recipe key: {exc}") from None
    trained = train_or_load(bundle, args.model, split, seed=args.seed, recipe=recipe,
                            model_kwargs={k: _num(v) for k, v in _kv(args.model_arg, "--model-arg").items()},
                            device=args.device, use_cache=not args.no_cache)
    out = export(trained, args.out, split)
    m = trained.meta
    print(json.dumps({"role": m["role"], "out": str(out), "from_cache": trained.from_cache,
                      "accuracy_train": round(m["accuracy_train"], 2), "accuracy_test": round(m["accuracy_test"], 2),
                      "wall_seconds": m["wall_seconds"]}))
    return 0


def _num(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from .data.fetch import fetch_fashion_mnist

    print(fetch_fashion_mnist(args.data_dir))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.cli_support import eval_command  # type: ignore[import-not-found]

    return eval_command(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .evaluation import print_record_table
    from .pipeline import run_experiment, save_experiment

    overrides = _kv(args.set)
    model_kwargs = {k: _num(v) for k, v in _kv(args.model_arg, "--model-arg").items()}
    spec_tag = args.forget.replace(":", "").replace(",", "_").replace("/", "_")
    out = Path(args.out) if args.out else Path("runs") / f"{args.dataset}-{args.model}-{args.method}-{spec_tag}-s{args.seed}"
    exp = run_experiment(args.dataset, args.model, args.forget, args.method, overrides=overrides, seed=args.seed,
                         model_kwargs=model_kwargs, metrics=args.metrics.split(",") if args.metrics else None,
                         device=args.device, data_dir=args.data_dir, original_path=args.original, preset=args.preset)
    print_record_table(exp.record)
    save_experiment(exp, out)
    Console(stderr=True).print(f"wrote {out}/record.json, unlearned.safetensors, split.json")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from ._io import write_json_atomic
    from .pipeline import split_kind
    from .tune import tune

    grid = {k: [_num(v) for v in vals.split(",") if v.strip()] for k, vals in _kv(args.grid, "--grid").items()}
    base = {k: _num(v) for k, v in _kv(args.set).items()}
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UnlearnkitError(f"--seeds expects comma-separated integers, got {args.seeds!r}") from None
    ranked = tune(args.method, args.dataset, args.model, args.forget, grid, seeds=seeds,
                  validation_seed=args.validation_seed, device=args.device, data_dir=args.data_dir, base=base)
    _print_table([{**cfg, "avg gap": gap} for cfg, gap in ranked],
                 title=f"{args.method} on {args.dataset}/{args.model}, validation {args.forget} "
                 f"(split seed {args.validation_seed}, model seeds {args.seeds})")
    best = {**base, **ranked[0][0]}
    block = "\n".join([f"[{args.dataset}.{args.model}.{split_kind(args.forget)}]",
                       f'source = "unlearnkit tune on {args.forget}, split seed {args.validation_seed}, '
                       f'model seeds {args.seeds}: avg gap {ranked[0][1]:.2f}"']
                      + [f"{k} = {json.dumps(v)}" for k, v in best.items()])
    print(f"\npreset block for src/unlearnkit/methods/presets/{args.method}.toml:\n{block}")
    if args.out:
        ranking = [{"config": c, "avg_gap": g if math.isfinite(g) else None} for c, g in ranked]  # inf: diverged
        write_json_atomic(args.out, {"method": args.method, "dataset": args.dataset, "model": args.model,
                                     "forget": args.forget, "validation_seed": args.validation_seed, "seeds": seeds,
                                     "base": base, "ranking": ranking, "preset_toml": block})
    return 0


DEMO_METHODS = ("ft", "neggrad_plus", "salun", "sfr_on")


def _cmd_demo(args: argparse.Namespace) -> int:
    """Fashion-MNIST small_cnn: original vs retrained vs a few methods, one table."""
    from rich.console import Console
    from rich.table import Table

    from .methods import METHODS
    from .pipeline import run_experiment, save_experiment

    methods = args.methods.split(",") if args.methods else [m for m in DEMO_METHODS if m in METHODS]
    for name in methods:
        METHODS.get(name)
    rows: list[list[str]] = []
    noise = None
    for name in methods:
        exp = run_experiment("fashion_mnist", "small_cnn", args.forget, name, seed=args.seed, device=args.device,
                             data_dir=args.data_dir)
        save_experiment(exp, Path(args.out) / name)
        rec = exp.record
        if not rows:
            for role in ("original", "retrained"):
                rows.append(_demo_row(role, rec["models"][role]["metrics"], rec["models"][role].get("runtime_seconds")))
            noise = rec.get("noise_floor_avg_gap")
        mu = rec["models"]["unlearned"]
        rows.append(_demo_row(name, mu["metrics"], mu.get("runtime_seconds"),
                              rec["gaps_to_retrained"].get("avg_gap_to_retrained")))
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

    return [name, f(m.get("accuracy_forget")), f(m.get("accuracy_retain")), f(m.get("accuracy_test")),
            f(m.get("mia_efficacy_forget")), f(gap), f(seconds)]


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench.runner import bench_command  # type: ignore[import-not-found]

    return bench_command(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from .bench.report import report_command  # type: ignore[import-not-found]

    return report_command(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
