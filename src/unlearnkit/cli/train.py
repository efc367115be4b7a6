"""``unlearnkit train``: an original, a retrained oracle or a SISA ensemble (the train job)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import common, kv, manipulation


def add_train(sub: Any) -> None:
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
    manipulation(p)
    common(p)


def cmd_train(args: argparse.Namespace) -> int:
    from ..jobs.train import train_job

    summary = train_job(
        args.dataset,
        args.model,
        args.out,
        forget=args.forget,
        seed=args.seed,
        epochs=args.epochs,
        recipe=kv(args.recipe, "--recipe"),
        model_args=kv(args.model_arg, "--model-arg"),
        shards=args.shards,
        slices=args.slices,
        aggregation=args.aggregation,
        manipulation=args.manipulation,
        data_dir=args.data_dir,
        device=args.device,
        use_cache=not args.no_cache,
    )
    print(json.dumps(summary))
    return 0
