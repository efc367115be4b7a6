"""What does sharding cost in accuracy, and how much of it does a longer member recipe win back?

Trains SISA ensembles (S shards, R slices; default S = 10, R = 1) of ``small_cnn`` members on Fashion-MNIST with
several member recipes (the dataset's default recipe with overrides) and sets their test accuracy (vote and
softmax aggregation, members' mean) beside two single models from the library cache: the default recipe
(15 epochs) and the 5-epoch recipe of ``benchmarks/sisa_fashion_mnist.md``. Writes a markdown table and the raw
rows (``.jsonl``) beside it.

    python benchmarks/sisa_accuracy.py                       # e20 and e20aug_wd, ~15 min on 2 free cores
    python benchmarks/sisa_accuracy.py --configs e20 --shards 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from unlearnkit import sisa
from unlearnkit.data import load_dataset
from unlearnkit.device import resolve_device
from unlearnkit.models import model_for_dataset
from unlearnkit.oracle import train_or_load
from unlearnkit.training import default_recipe, predict_logits

#: Member recipes: overrides of the dataset's default recipe.
CONFIGS: dict[str, dict[str, Any]] = {
    "e5": {"epochs": 5},
    "e20": {"epochs": 20},
    "e20aug_wd": {"epochs": 20, "augment": True, "weight_decay": 5e-4},
    "e40aug_wd": {"epochs": 40, "augment": True, "weight_decay": 5e-4},
}


def _accuracies(ens: sisa.SISAEnsemble, dataset: Any, dev: torch.device) -> dict[str, float]:
    """Test accuracy of the ensemble by vote and by softmax (one forward pass of each member) and the members' mean."""
    outs, labels = [], torch.empty(0)
    for m in ens.members:
        logits, labels = predict_logits(m, dataset, device=dev)
        outs.append(logits)
    stacked = torch.stack(outs)

    def acc(pred: torch.Tensor) -> float:
        return float((pred == labels).float().mean() * 100)

    return {
        "vote": acc(ens.aggregate(stacked, "vote").argmax(1)),
        "softmax": acc(ens.aggregate(stacked, "softmax").argmax(1)),
        "members_mean": sum(acc(o.argmax(1)) for o in stacked) / len(stacked),
    }


def _environment(argv: list[str] | None, dev: torch.device, t_start: float) -> dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(dev),
        "command": "python benchmarks/sisa_accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "minutes": (time.perf_counter() - t_start) / 60,
    }


def write_report(
    out: Path, args: argparse.Namespace, singles: dict[str, Any], rows: list[dict[str, Any]], env: dict[str, Any]
) -> None:
    """The markdown table and the raw rows (``.jsonl``) beside it, each written atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# SISA accuracy on {args.dataset}: S = {args.shards}, R = {args.slices}, member recipes",
        "",
        f"Regenerate: `{env['command'].strip()}`. Measured on {env['date_utc']}: {env['machine']}, "
        f"{env['cpu_count']} CPU cores, torch {env['torch']} ({env['threads']} threads), device `{env['device']}`; "
        f"{env['minutes']:.1f} min. Raw rows: `{out.with_suffix('.jsonl').name}`.",
        "",
        f"Single models (seed {args.seed}, library cache): default recipe ({singles['default']['epochs']} epochs) "
        f"**{singles['default']['test_accuracy']:.2f} %**; 5 epochs **{singles['e5']['test_accuracy']:.2f} %**.",
        "",
        "| member recipe | overrides | sample-passes | vote (%) | softmax (%) | members' mean (%) | Δ vote vs default "
        "single (pp) | Δ vote vs 5-epoch single (pp) | training (s) |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {json.dumps(r['overrides'])} | {r['train_samples']:,} | {r['vote']:.2f} | "
            f"{r['softmax']:.2f} | {r['members_mean']:.2f} | {r['vote'] - singles['default']['test_accuracy']:+.2f} | "
            f"{r['vote'] - singles['e5']['test_accuracy']:+.2f} | {r['train_seconds']:.0f} |"
        )
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(out)
    jsonl = out.with_suffix(".jsonl")
    tmp = jsonl.with_suffix(".jsonl.tmp")
    tmp.write_text(
        "".join(json.dumps(x) + "\n" for x in [{"kind": "environment", **env}, {"kind": "single", **singles}, *rows])
    )
    tmp.replace(jsonl)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--configs", nargs="+", default=["e20", "e20aug_wd"], choices=sorted(CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", metavar="auto|cpu|cuda")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default="benchmarks/sisa_accuracy.md")
    args = ap.parse_args(argv)

    t_start = time.perf_counter()
    dev = resolve_device(args.device)
    bundle = load_dataset(args.dataset, args.data_dir)
    base = default_recipe(bundle.info.name, args.model)
    singles = {}
    for name, recipe in (("default", base), ("e5", dataclasses.replace(base, epochs=5))):
        trained = train_or_load(bundle, args.model, None, seed=args.seed, recipe=recipe, device=dev, progress=False)
        singles[name] = {"epochs": recipe.epochs, "test_accuracy": float(trained.meta["accuracy_test"])}
    rows = []
    for name in args.configs:
        recipe = dataclasses.replace(base, **CONFIGS[name])
        t0 = time.perf_counter()
        ens = sisa.train_sisa(
            model_for_dataset(args.model, bundle.info),
            bundle.train,
            shards=args.shards,
            slices=args.slices,
            recipe=recipe,
            seed=args.seed,
            device=dev,
            cache=None,
            augment=bundle.info.augment,
            dataset=bundle.info.name,
        )
        row = {
            "config": name,
            "overrides": CONFIGS[name],
            "shards": args.shards,
            "slices": args.slices,
            "train_seconds": time.perf_counter() - t0,
            "train_samples": ens.spec.train_samples,
            **_accuracies(ens, bundle.test, dev),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        write_report(Path(args.out), args, singles, rows, _environment(argv, dev, t_start))  # after every row
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
