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
    p.add_argument("--model", default=None, help="model name (see `unlearnkit list models`); not with --head")
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
    p.add_argument(
        "--head",
        choices=["ridge", "certified"],
        default=None,
        help="train a head model instead: a frozen --backbone and a ridge head (exact deletion) or a certified "
        "logistic head ((ε, δ)-certified deletion, Guo et al. 2020); delete from it with `unlearnkit request` or "
        "`unlearnkit unlearn` (method head)",
    )
    p.add_argument(
        "--backbone",
        default=None,
        metavar="MODEL|FILE",
        help="the head model's backbone: a model name (trained here, cached: on the public split with "
        "--public-split, else on all training data) or a checkpoint file (with --backbone-data)",
    )
    p.add_argument(
        "--public-split",
        type=float,
        default=None,
        metavar="P",
        help="fraction P of the training set (seeded) that is public: it trains the backbone, never the head, and "
        "cannot be deleted; the guarantee then covers the whole model (without it: the head only)",
    )
    p.add_argument(
        "--backbone-data",
        choices=["public", "same"],
        default=None,
        help="what a --backbone FILE was trained on: public (other data) or same (this training data)",
    )
    p.add_argument(
        "--head-arg",
        action="append",
        metavar="KEY=VALUE",
        help="head option: lam (both; ridge default 1, certified 1e-3), sigma (default 10), eps (default 1), delta "
        "(default 1e-5) of the certified head",
    )
    p.add_argument(
        "--out", required=True, help="output folder: model.safetensors, meta.json, split.json (a head: head.json)"
    )
    manipulation(p)
    common(p)


def cmd_train(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..jobs.train import train_job

    if args.head is not None:
        return _train_head(args)
    if args.backbone is not None or args.public_split is not None or args.backbone_data or args.head_arg:
        raise ConfigError("--backbone, --public-split, --backbone-data and --head-arg need --head ridge|certified")
    if args.model is None:
        raise ConfigError("train needs --model NAME (or --head ridge|certified --backbone MODEL|FILE for a head model)")
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


def _train_head(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..jobs.train_head import train_head_job

    if args.model is not None:
        raise ConfigError(
            "--head trains a head on a frozen --backbone; pass the architecture as --backbone, not --model"
        )
    if args.backbone is None:
        raise ConfigError("--head needs --backbone MODEL|FILE (e.g. --backbone small_cnn --public-split 0.5)")
    if args.shards is not None or args.forget or args.manipulation:
        raise ConfigError("--head trains on the deletable data; delete from it afterwards (no --shards/--forget)")
    summary = train_head_job(
        args.dataset,
        args.head,
        args.backbone,
        args.out,
        public_split=args.public_split,
        backbone_data=args.backbone_data,
        head_args=kv(args.head_arg, "--head-arg"),
        seed=args.seed,
        epochs=args.epochs,
        recipe=kv(args.recipe, "--recipe"),
        model_args=kv(args.model_arg, "--model-arg"),
        data_dir=args.data_dir,
        device=args.device,
        use_cache=not args.no_cache,
    )
    print(json.dumps(summary))
    return 0
