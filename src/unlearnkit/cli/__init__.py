"""The `unlearnkit` command: parses arguments and calls one job of the library; no logic of its own.

One module per verb group (`inventory`: list, cache, fetch; `train`; `experiment`: eval, run, demo; `tune`;
`bench`: bench, report; `requests`: request, unlearn), each adding its parsers and handlers to `VERBS`, the
dispatch table. Every verb validates its inputs before any compute and exits non-zero with a one-line message
on bad input (exit 2), writing no partial files. ``--no-progress`` and ``--no-cache`` reach the library as an
explicit `unlearnkit.settings.scoped` block around the job, not through the environment.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import __version__
from ..errors import IncompleteUnlearningError, UnlearnkitError, WriteFailedError
from . import bench, experiment, inventory, requests, train, tune
from ._common import Parser

EPILOG = """forget specs: class:3 | class:3,7 | random:0.1 | indices:FILE (JSON list or one index per line)
examples:
  unlearnkit train --dataset fashion_mnist --model small_cnn --seed 0 --out runs/original
  unlearnkit run --dataset fashion_mnist --model small_cnn --forget class:0 --method salun --out runs/salun
  unlearnkit list methods"""


@dataclass(frozen=True)
class Verb:
    """One verb: how its parser is added, the handler it runs, and what the shared pre-flight checks."""

    add: Callable[[Any], None]
    run: Callable[[argparse.Namespace], int]
    outputs: tuple[tuple[str, str], ...] = ()  # (attribute, "dir" | "file") of its output paths
    uses_cache: bool = False


#: The dispatch table, in the order of ``unlearnkit --help``.
VERBS: dict[str, Verb] = {
    "list": Verb(inventory.add_list, inventory.cmd_list),
    "cache": Verb(inventory.add_cache, inventory.cmd_cache, uses_cache=True),
    "train": Verb(train.add_train, train.cmd_train, (("out", "dir"),), uses_cache=True),
    "fetch": Verb(inventory.add_fetch, inventory.cmd_fetch, (("data_dir", "dir"),)),
    "eval": Verb(experiment.add_eval, experiment.cmd_eval, (("out", "dir"),), uses_cache=True),
    "run": Verb(experiment.add_run, experiment.cmd_run, (("out", "dir"),), uses_cache=True),
    "tune": Verb(tune.add_tune, tune.cmd_tune, (("out", "file"),), uses_cache=True),
    "demo": Verb(experiment.add_demo, experiment.cmd_demo, (("out", "dir"),), uses_cache=True),
    "bench": Verb(bench.add_bench, bench.cmd_bench, (("out", "dir"),), uses_cache=True),
    "report": Verb(bench.add_report, bench.cmd_report, (("out", "dir"),), uses_cache=True),
    "request": Verb(requests.add_request, requests.cmd_request),
    "unlearn": Verb(requests.add_unlearn, requests.cmd_unlearn, (("out", "dir"),)),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="unlearnkit",
        description="Machine unlearning for image classifiers: train, unlearn, evaluate against "
        "the retrained model, benchmark.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"unlearnkit {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error (also: UNLEARNKIT_DEBUG=1)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb in VERBS.values():
        verb.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ..settings import scoped

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    verb = VERBS[args.command]
    progress = False if getattr(args, "no_progress", False) else None
    # train passes --no-cache to its job itself; every other verb's models all bypass the cache
    no_cache = getattr(args, "no_cache", False) and args.command != "train"
    try:
        _preflight(verb, args)
        with scoped(progress=progress, model_cache=False if no_cache else None):
            return int(verb.run(args) or 0)
    except UnlearnkitError as exc:
        if _debug(args):
            raise
        print(f"unlearnkit {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        # 2: the input was refused before any compute; 1: the run happened but did not complete the deletion, or its
        # result could not be written
        return 1 if isinstance(exc, (IncompleteUnlearningError, WriteFailedError)) else 2
    except KeyboardInterrupt:
        print(f"unlearnkit {args.command}: interrupted; no partial output was written", file=sys.stderr)
        return 130
    except Exception as exc:  # the library's dependencies and the OS: one line, no traceback (--debug shows it)
        if _debug(args):
            raise
        from ._errors import describe

        print(f"unlearnkit {args.command}: error: {describe(exc)}", file=sys.stderr)
        return 1


def _debug(args: argparse.Namespace) -> bool:
    import os

    return bool(getattr(args, "debug", False) or os.environ.get("UNLEARNKIT_DEBUG"))


def _preflight(verb: Verb, args: argparse.Namespace) -> None:
    """Checks every verb shares, before any compute: output paths and the cache folder."""
    from .._io import check_output_dir, check_output_file

    for attr, kind in verb.outputs:
        value = getattr(args, attr, None)
        if value:
            flag = "--" + attr.replace("_", "-")
            (check_output_dir if kind == "dir" else check_output_file)(value, flag)
            if kind == "dir":
                from ..guards import check_not_model_directory

                check_not_model_directory(value, flag)  # would overwrite the model a ledger records
    if verb.uses_cache:
        from ..cache import cache_dir

        cache_dir()  # a cache path that is a file fails here, not after the training


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
