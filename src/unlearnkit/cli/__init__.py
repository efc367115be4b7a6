"""The `unlearnkit` command: parses arguments and calls the library; no logic of its own.

Every verb validates its inputs before any compute and exits non-zero with a one-line message on bad
input (exit 2), writing no partial files.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from .. import __version__
from ..errors import UnlearnkitError

EPILOG = """forget specs: class:3 | class:3,7 | random:0.1 | indices:FILE (JSON list or one index per line)
examples:
  unlearnkit train --dataset fashion_mnist --model small_cnn --seed 0 --out runs/original
  unlearnkit run --dataset fashion_mnist --model small_cnn --forget class:0 --method salun --out runs/salun
  unlearnkit list methods"""


def _common(p: argparse.ArgumentParser, *, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", required=True, help="dataset name (see `unlearnkit list datasets`)")
        p.add_argument(
            "--data-dir",
            default=None,
            help="folder with the dataset files (else $UNLEARNKIT_DATA, "
            "Debian's /usr/share/datasets, torchvision layout)",
        )
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the split, the model init and the method (default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _seed(text: str) -> int:
    """argparse type of seeds: an integer in [0, 2^63)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^63), got {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {text}")
    return v


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _no_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the model cache (train afresh)")


def _manipulation(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument(
        "--manipulation",
        default=None,
        metavar="SPEC",
        help="manipulate the training data under the seed first, e.g. badnets:rate=0.05,target=0,value=1 or "
        f"confusion:k=500,a=3,b=5; forget it with --forget poisoned or poisoned:0.25{note}",
    )


def _audits(p: argparse.ArgumentParser, *, oracles: bool = True, note: str = "") -> None:
    p.add_argument(
        "--audits",
        default=None,
        metavar="LEVEL|NAMES",
        help="audit level: none, standard (default: population MIAs, linear probe, CKA to retrained) or strong "
        "(+ relearn time, oracle margins, U-LiRA-lite, competition ε; trains extra models through the cache and "
        f"prints the cost first); or comma-separated audit names, -name drops one{note}",
    )
    if oracles:
        p.add_argument(
            "--oracles",
            type=int,
            default=None,
            metavar="K",
            help="train K ≥ 3 retrained oracles (cached) and score the unlearned model's per-example margins "
            f"against their distribution (KLoM-style){note}",
        )


def _kv(items: Sequence[str] | None, what: str = "--set") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UnlearnkitError(f"{what} expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unlearnkit",
        description="Machine unlearning for image classifiers: train, unlearn, evaluate against "
        "the retrained model, benchmark.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"unlearnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list datasets, models, methods or metrics")
    p.add_argument("what", choices=["datasets", "models", "methods", "metrics"])
    p.add_argument(
        "--format",
        choices=["table", "plain", "json"],
        default="table",
        help="table (wraps long columns, never cuts a name), plain (name<TAB>summary) or json",
    )

    p = sub.add_parser("cache", help="list, verify or clear the model cache ($UNLEARNKIT_CACHE)")
    p.add_argument(
        "action",
        choices=["list", "verify", "clear"],
        help="list the entries, verify every entry's SHA-256 (removing damaged ones), or clear it",
    )
    p.add_argument("--namespace", default=None, help="only this part of the cache (models, fisher, filters, …)")
    p.add_argument("--yes", action="store_true", help="clear without asking (needed when not on a terminal)")

    p = sub.add_parser(
        "train",
        help="train an original model, or with --forget the retrained oracle (cached)",
        description="Train on the full training set (original) or, with --forget, on the retain set "
        "only (the retrained oracle). Results are cached by (dataset, model, recipe, split, seed); "
        "the same call returns from the cache in seconds.",
    )
    p.add_argument("--model", required=True, help="model name (see `unlearnkit list models`)")
    p.add_argument("--forget", default=None, help="forget spec; train the retrained oracle on the retain set")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--recipe", action="append", metavar="KEY=VALUE", help="override any recipe field (repeatable)")
    p.add_argument("--model-arg", action="append", metavar="KEY=VALUE", help="model option, e.g. width=16")
    p.add_argument("--no-cache", action="store_true", help="train even when a cached model exists")
    p.add_argument(
        "--shards",
        type=int,
        default=None,
        metavar="S",
        help="train a SISA ensemble of S members instead (exact unlearning: `unlearnkit request` and --method sisa "
        "delete by retraining only the affected shards); the recipe is each member's",
    )
    p.add_argument("--slices", type=int, default=1, metavar="R", help="SISA slices per shard (default 1)")
    p.add_argument("--aggregation", choices=["vote", "softmax"], default="vote", help="SISA aggregation (default vote)")
    p.add_argument("--out", required=True, help="output folder: model.safetensors, meta.json, split.json")
    _manipulation(p)
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
    _audits(p, oracles=False)
    _common(p)

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
    _audits(p)
    _manipulation(p)
    _no_cache(p)
    _common(p)

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
    p.add_argument("--sampler-seed", type=_seed, default=0, help="seed of the sampler (default 0)")
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
    p.add_argument("--validation-seed", type=_seed, default=100, help="seed of the validation split (default 100)")
    p.add_argument("--out", default=None, help="write the ranking and the preset block here (JSON)")
    _no_cache(p)
    _common(p)

    p = sub.add_parser("demo", help="the Fashion-MNIST demo: original vs retrained vs unlearned")
    p.add_argument("--methods", default=None, help="comma-separated methods (default: a representative few)")
    p.add_argument("--forget", default="class:0", help="forget spec (default class:0)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST files")
    _no_cache(p)
    _common(p, dataset=False)

    p = sub.add_parser("bench", help="run a benchmark grid from a TOML spec (resumable)")
    p.add_argument("spec", help="benchmark spec (.toml)")
    p.add_argument("--out", required=True, help="output folder; records.jsonl is appended there")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _manipulation(p, " (replaces the spec's grid.manipulations)")
    _audits(p, note=" (replaces the spec's value)")
    _no_cache(p)

    p = sub.add_parser("report", help="tables, plots and report.html from a bench folder's records")
    p.add_argument("dir", help="bench output folder holding records.jsonl")
    p.add_argument("--out", default=None, help="report folder (default DIR/report)")

    from .requests import add_parsers as _add_request_parsers  # request init|add|list|apply|verify, unlearn

    _add_request_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    import os

    if getattr(args, "no_progress", False):
        os.environ["UNLEARNKIT_PROGRESS"] = "0"
    no_cache_before = os.environ.get("UNLEARNKIT_NO_CACHE")
    try:
        _preflight(args)
        if getattr(args, "no_cache", False) and args.command != "train":
            os.environ["UNLEARNKIT_NO_CACHE"] = "1"  # read by oracle.train_or_load, for every model of the verb
        return int(globals()[f"_cmd_{args.command}"](args) or 0)
    except UnlearnkitError as exc:
        print(f"unlearnkit {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unlearnkit {args.command}: interrupted; no partial output was written", file=sys.stderr)
        return 130
    finally:
        if no_cache_before is None:
            os.environ.pop("UNLEARNKIT_NO_CACHE", None)
        else:
            os.environ["UNLEARNKIT_NO_CACHE"] = no_cache_before


def _cmd_request(args: argparse.Namespace) -> int:
    from .requests import cmd_request

    return cmd_request(args)


def _cmd_unlearn(args: argparse.Namespace) -> int:
    from .requests import cmd_unlearn

    return cmd_unlearn(args)


# verb -> (attribute, kind) of its output paths, checked before any compute
_OUTPUTS = {
    "train": [("out", "dir")],
    "run": [("out", "dir")],
    "eval": [("out", "dir")],
    "tune": [("out", "file")],
    "demo": [("out", "dir")],
    "bench": [("out", "dir")],
    "report": [("out", "dir")],
    "fetch": [("data_dir", "dir")],
}
_USES_CACHE = {"train", "run", "tune", "demo", "bench", "eval", "report", "cache"}


def _preflight(args: argparse.Namespace) -> None:
    """Checks every verb shares, before any compute: output paths and the cache folder."""
    from .._io import check_output_dir, check_output_file

    for attr, kind in _OUTPUTS.get(args.command, []):
        value = getattr(args, attr, None)
        if value:
            flag = "--" + attr.replace("_", "-")
            (check_output_dir if kind == "dir" else check_output_file)(value, flag)
    if args.command in _USES_CACHE:
        from ..cache import cache_dir

        cache_dir()  # a cache path that is a file fails here, not after the training


# ------------------------------------------------------------------------------------------ handlers
def _print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if not rows:
        return
    table = Table(title=title)
    for i, col in enumerate(rows[0]):
        if i == 0:  # the name column is never cut: the other columns wrap instead
            width = max(len(str(col)), *(len(str(r[col])) for r in rows))
            table.add_column(str(col), no_wrap=True, min_width=width)
        else:
            table.add_column(str(col), overflow="fold")
    for r in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console().print(table)


def _cmd_list(args: argparse.Namespace) -> int:
    if args.what == "datasets":
        from ..data import DATASETS, dataset_summary

        rows = [{"name": n, "summary": dataset_summary(n)} for n in DATASETS.names()]
    elif args.what == "models":
        from ..models import MODEL_SUMMARIES, MODELS

        rows = [{"name": n, "summary": MODEL_SUMMARIES.get(n, "")} for n in MODELS.names()]
    elif args.what == "methods":
        from ..methods import method_table

        rows = method_table()
    else:
        from ..evaluation import metric_table

        rows = metric_table()
    fmt = getattr(args, "format", "table")
    if fmt == "json":
        print(json.dumps(rows, default=str))
    elif fmt == "plain":
        for r in rows:
            print("\t".join(" ".join(str(v).split()) for v in r.values()))
    else:
        _print_table(rows, args.what)
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from ..cache import cache_maintenance

    return cache_maintenance(args.action, namespace=args.namespace, yes=args.yes)


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..data import load_dataset, split_for
    from ..models import MODELS, parse_model_args
    from ..oracle import export, parse_recipe_overrides, train_or_load
    from ..training import default_recipe

    MODELS.get(args.model)  # unknown names fail before loading data
    model_kwargs = parse_model_args(args.model, _kv(args.model_arg, "--model-arg"))
    overrides: dict[str, Any] = parse_recipe_overrides(_kv(args.recipe, "--recipe"))
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    from ..data.manipulations import parse_manipulation

    manipulation = parse_manipulation(args.manipulation)  # a bad spec fails before loading data
    if args.shards is not None:
        if args.shards < 1 or args.slices < 1:
            raise UnlearnkitError(f"--shards and --slices must be ≥ 1, got {args.shards} and {args.slices}")
        if args.forget or manipulation is not None:
            raise UnlearnkitError(
                "--shards trains a SISA ensemble on the full training set; delete data from it afterwards "
                "(`unlearnkit request`, or `unlearnkit unlearn --method sisa`) instead of --forget/--manipulation"
            )
    elif args.slices != 1 or args.aggregation != "vote":
        raise UnlearnkitError("--slices and --aggregation need --shards (a SISA ensemble)")
    bundle = load_dataset(args.dataset, args.data_dir)
    recipe = default_recipe(bundle.info.name, args.model)
    if overrides:
        try:
            recipe = replace(recipe, **overrides)
        except TypeError as exc:
            raise UnlearnkitError(f"bad --recipe key: {exc}") from None
    if args.shards is not None:
        return _train_sisa(args, bundle, model_kwargs, recipe)
    if manipulation is not None:
        from ..pipeline import manipulate

        bundle = manipulate(
            bundle, manipulation, args.seed, model=args.model, model_kwargs=model_kwargs, device=args.device
        )
    split = split_for(bundle, args.forget, args.seed)
    trained = train_or_load(
        bundle,
        args.model,
        split,
        seed=args.seed,
        recipe=recipe,
        model_kwargs=model_kwargs,
        device=args.device,
        use_cache=not args.no_cache,
    )
    out = export(trained, args.out, split)
    m = trained.meta
    print(
        json.dumps(
            {
                "role": m["role"],
                "out": str(out),
                "from_cache": trained.from_cache,
                "accuracy_train": round(m["accuracy_train"], 2),
                "accuracy_test": round(m["accuracy_test"], 2),
                "wall_seconds": m["wall_seconds"],
            }
        )
    )
    return 0


def _train_sisa(args: argparse.Namespace, bundle: Any, model_kwargs: dict[str, Any], recipe: Any) -> int:
    from .. import sisa
    from ..device import resolve_device
    from ..models import model_for_dataset
    from ..training import accuracy

    device = resolve_device(args.device)
    ens = sisa.train_sisa(
        model_for_dataset(args.model, bundle.info, **model_kwargs),
        bundle.train,
        shards=args.shards,
        slices=args.slices,
        recipe=recipe,
        seed=args.seed,
        aggregation=args.aggregation,
        device=device,
        cache=None if args.no_cache else "default",
        augment=bundle.info.augment,
        dataset=bundle.info.name,
    )
    out = Path(args.out) / "model.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    sisa.save_sisa(ens, out)
    summary = {
        "role": "sisa",
        "out": str(out),
        "shards": args.shards,
        "slices": args.slices,
        "aggregation": args.aggregation,
        "accuracy_test": round(accuracy(ens, bundle.test, device=device), 2),
        "wall_seconds": round(ens.spec.train_seconds or 0.0, 1),
    }
    print(json.dumps(summary))
    return 0


def _num(v: str) -> Any:
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def _cmd_fetch(args: argparse.Namespace) -> int:
    from ..data.fetch import fetch_fashion_mnist

    print(fetch_fashion_mnist(args.data_dir))
    return 0


def _print_record(record: dict[str, Any], title: str | None = None) -> None:
    """A record as a table: metric | original | retrained | unlearned | gap."""
    from rich.console import Console
    from rich.table import Table

    from ..evaluation import format_table

    cols = ("metric", "original", "retrained", "unlearned", "gap")
    table = Table(title=title)
    for col in cols:
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in format_table(record):
        table.add_row(*[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols])
    Console().print(table)


def _cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation import write_record
    from ..evaluation.checkpoints import evaluate_checkpoints
    from ..evaluation.levels import resolve_audits

    resolve_audits(args.audits)  # an unknown audit name fails before any checkpoint is read
    _check_eval_checkpoints(args)

    record = evaluate_checkpoints(
        args.model,
        args.retrained,
        dataset=args.dataset,
        forget=args.forget,
        seed=args.seed,
        original=args.original,
        metrics=args.metrics,
        device=args.device,
        data_dir=args.data_dir,
        audits=args.audits,
    )
    path = write_record(record, Path(args.out) / "record.json")
    task = record["task"]
    _print_record(record, title=f"{task['dataset']} {task['forget']['spec']} seed {args.seed}")
    print(f"record: {path}")
    return 0


def _check_eval_checkpoints(args: argparse.Namespace) -> None:
    """Before any compute: each checkpoint's stored role and split digest against --forget/--seed/--dataset."""
    from ..data import load_dataset, split_for
    from ..errors import IncompatibleError
    from ..models import checkpoint_info

    paths = {"--model": args.model, "--retrained": args.retrained, "--original": args.original}
    for flag, path in paths.items():
        if path is not None and Path(path).is_dir():
            raise IncompatibleError(f"{flag} {path} is a folder; pass the .safetensors file inside it")
        if path is not None and not Path(path).exists():
            raise IncompatibleError(f"{flag} checkpoint {path} does not exist")
    infos = {flag: checkpoint_info(path) for flag, path in paths.items() if path is not None and Path(path).is_file()}
    if infos.get("--original", {}).get("role") == "retrained":
        raise IncompatibleError(
            f"--original {args.original} is a retrained oracle (stored role 'retrained'); "
            "pass the model trained on the full training set"
        )
    role = infos.get("--retrained", {}).get("role")
    if role in ("original", "unlearned"):
        raise IncompatibleError(
            f"--retrained {args.retrained} is an {role} model (stored role); pass the model "
            "retrained on the retain set (`unlearnkit train --forget …`)"
        )
    if not any(i["split_sha256"] for f, i in infos.items() if f != "--original"):
        return
    bundle = load_dataset(args.dataset, args.data_dir)
    split = split_for(bundle, args.forget, args.seed)
    for flag in ("--model", "--retrained"):
        want = infos.get(flag, {}).get("split_sha256")
        if want and want != split.sha256:
            raise IncompatibleError(
                f"{flag} {paths[flag]} was made for split {want[:12]}… (stored in the "
                f"checkpoint), but --forget {args.forget} --seed {args.seed} gives split "
                f"{split.sha256[:12]}…; pass the forget spec and seed it was made with"
            )


def _cmd_run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .._io import check_output_dir
    from ..models import MODELS, parse_model_args
    from ..pipeline import run_experiment, save_experiment

    overrides = _kv(args.set)
    MODELS.get(args.model)
    model_kwargs = parse_model_args(args.model, _kv(args.model_arg, "--model-arg"))
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
    exp = run_experiment(
        args.dataset,
        args.model,
        args.forget,
        args.method,
        overrides=overrides,
        seed=args.seed,
        model_kwargs=model_kwargs,
        metrics=args.metrics.split(",") if args.metrics else None,
        device=args.device,
        data_dir=args.data_dir,
        original_path=args.original,
        preset=args.preset,
        audits=args.audits,
        oracles=args.oracles or 0,
        manipulation=args.manipulation,
        noise_floor=not getattr(args, "no_noise_floor", False),
    )
    _print_record(exp.record)
    save_experiment(exp, out)
    for w in exp.record.get("warnings", []):
        print(f"unlearnkit run: warning: {w}", file=sys.stderr)
    Console(stderr=True).print(f"wrote {out}/record.json, unlearned.safetensors, split.json")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._io import write_json_atomic
    from ..tune import require_optuna, tune

    require_optuna()  # before anything else: says how to install it
    grid = {k: [_num(v) for v in vals.split(",") if v.strip()] for k, vals in _kv(args.grid, "--grid").items()}
    base = {k: _num(v) for k, v in _kv(args.set).items()}
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
    storage = args.storage
    if storage is None and args.out:
        storage = f"sqlite:///{Path(args.out).parent / 'study.db'}"
    if storage and storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    res = tune(
        args.method,
        args.dataset,
        args.model,
        args.forget,
        grid or None,
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
        storage=storage,
        study_name=args.study_name,
        budget=budget,
        over_budget=args.over_budget,
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
    _print_table(
        rows,
        title=f"{res.method} on {res.dataset}/{res.model}, validation {res.forget} "
        f"(split seed {res.validation_seed}, originals {args.seeds}), study {res.study_name}",
    )
    block = res.preset_block()
    print(f"\npreset block for src/unlearnkit/methods/presets/{res.method}.toml:\n{block}")
    print(f"\nreproduce: {res.command()}")
    if args.out:
        write_json_atomic(args.out, res.to_json())
    return 0


DEMO_METHODS = ("ft", "neggrad_plus", "salun", "sfr_on")


def _cmd_demo(args: argparse.Namespace) -> int:
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


def _cmd_bench(args: argparse.Namespace) -> int:
    """0 when every run is recorded or skipped, 1 when some failed, 130 on Ctrl-C."""
    from ..bench.runner import run_bench
    from ..bench.spec import load_spec

    spec = load_spec(args.spec)
    if args.manipulation is not None:
        from dataclasses import replace

        from ..data.manipulations import parse_manipulation

        m = parse_manipulation(args.manipulation)
        spec = replace(spec, manipulations=(str(m) if m is not None else None,))
    if args.audits is not None or args.oracles is not None:
        from dataclasses import replace

        from ..bench.spec import check_audits

        spec = replace(
            spec,
            audits=args.audits if args.audits is not None else spec.audits,
            oracles=args.oracles if args.oracles is not None else spec.oracles,
        )
        check_audits(spec.audits, spec.oracles)
    try:
        result = run_bench(
            spec, args.out, device=args.device, data_dir=args.data_dir, progress=False if args.no_progress else None
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


def _cmd_report(args: argparse.Namespace) -> int:
    from ..bench.report import build_report

    out = build_report(args.dir, args.out)
    print(
        json.dumps(
            {"report": str(out / "report.html"), "tables": str(out / "tables.md"), "csv": str(out / "tables.csv")}
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
