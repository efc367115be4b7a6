"""``unlearnkit list``, ``unlearnkit cache`` and ``unlearnkit fetch``: what is installed, cached or downloadable."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..errors import ConfigError
from ._common import print_table


def add_list(sub: Any) -> None:
    p = sub.add_parser("list", help="list datasets, models, methods or metrics")
    p.add_argument("what", choices=["datasets", "models", "methods", "metrics"])
    p.add_argument(
        "--format",
        choices=["table", "plain", "json"],
        default="table",
        help="table (wraps long columns, never cuts a name), plain (name<TAB>summary) or json",
    )


def add_cache(sub: Any) -> None:
    p = sub.add_parser("cache", help="list, verify or clear the model cache ($UNLEARNKIT_CACHE)")
    p.add_argument(
        "action",
        choices=["list", "verify", "clear"],
        help="list the entries, verify every entry's SHA-256 (removing damaged ones), or clear it",
    )
    p.add_argument("--namespace", default=None, help="only this part of the cache (models, fisher, filters, …)")
    p.add_argument("--yes", action="store_true", help="clear without asking (needed when not on a terminal)")


def add_fetch(sub: Any) -> None:
    p = sub.add_parser("fetch", help="download a dataset from its official source, checking SHA-256")
    p.add_argument("dataset", choices=["fashion_mnist"])
    p.add_argument("--data-dir", required=True, help="folder to write the files into")


def cmd_list(args: argparse.Namespace) -> int:
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
        print_table(rows, args.what)
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .. import cache

    if args.action == "list":
        root, entries = cache.list_cache(args.namespace)
        for e in entries:
            print(
                f"{e.namespace}/{e.label[:16]}  {e.size / 1e6:8.2f} MB"
                + (f"  {e.description}" if e.description else "")
            )
        print(f"{len(entries)} entries, {sum(e.size for e in entries) / 1e6:.2f} MB in {root}")
        return 0
    if args.action == "verify":
        total, removed = cache.verify_cache(args.namespace)
        for entry, why in removed:
            print(f"removed {entry}: {why}")
        print(
            f"{total - len(removed)} of {total} entries verified; {len(removed)} damaged entries removed (they are "
            "recomputed when next needed)"
        )
        return 1 if removed else 0
    target = cache.cache_target(args.namespace)
    if not target.exists():
        print(f"nothing to clear in {target}")
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"refusing to clear {target} without confirmation; pass --yes")
        if input(f"remove every entry under {target}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("left as it is")
            return 1
    cache.clear_cache(args.namespace)
    print(f"cleared {target}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..data.fetch import fetch_fashion_mnist

    print(fetch_fashion_mnist(args.data_dir))
    return 0
