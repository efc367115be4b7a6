"""Argument helpers and renderers shared by the verb modules of the CLI (argparse and rich live only here)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import ConfigError


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (and exit code 2) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def seed_arg(text: str) -> int:
    """argparse type of seeds: an integer in [0, 2^63)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^63), got {text!r}") from None
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"must be in [0, 2^63), got {text}")
    return v


def common(p: argparse.ArgumentParser, *, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", required=True, help="dataset name (see `unlearnkit list datasets`)")
        p.add_argument(
            "--data-dir",
            default=None,
            help="folder with the dataset files (else $UNLEARNKIT_DATA, "
            "Debian's /usr/share/datasets, torchvision layout)",
        )
    p.add_argument("--device", default="auto", help="auto (cuda when present), cpu, cuda or cuda:N (default: auto)")
    p.add_argument(
        "--seed", type=seed_arg, default=0, help="seed of the split, the model init and the method (default 0)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def no_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the model cache (train afresh)")


def manipulation(p: argparse.ArgumentParser, note: str = "") -> None:
    p.add_argument(
        "--manipulation",
        default=None,
        metavar="SPEC",
        help="manipulate the training data under the seed first, e.g. badnets:rate=0.05,target=0,value=1 or "
        f"confusion:k=500,a=3,b=5; forget it with --forget poisoned or poisoned:0.25{note}",
    )


def audits(p: argparse.ArgumentParser, *, oracles: bool = True, note: str = "") -> None:
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
            type=_oracles,
            default=None,
            metavar="K",
            help="train K ≥ 3 retrained oracles (cached) and score the unlearned model's per-example margins "
            f"against their distribution (KLoM-style){note}",
        )
        p.add_argument(
            "--yes",
            action="store_true",
            help=f"run audits that train more than {COST_GATE_TRAININGS} extra models without asking",
        )


#: Extra models a command's audits may train without confirmation (--yes, or an answer on a terminal).
COST_GATE_TRAININGS = 20


def _oracles(text: str) -> int:
    """argparse type of --oracles: K ≥ 3 (0, 1 and 2 would be ignored or meaningless)."""
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer K ≥ 3, got {text!r}") from None
    if k < 3:
        raise argparse.ArgumentTypeError(
            f"K must be ≥ 3 (the leave-one-out reference needs two other oracles), got {k}; leave --oracles out "
            "for none"
        )
    return k


def confirm_cost(audits: Any, oracles: int | None, yes: bool, verb: str) -> None:
    """Before any compute: audits that would train more than `COST_GATE_TRAININGS` extra models need ``--yes``
    (or a "y" on a terminal); without a terminal they are refused."""
    from ..audit_models import plan_audit_models
    from ..evaluation.levels import resolve_audits

    plan = plan_audit_models(resolve_audits(audits), oracles or 0)
    if plan.trainings <= COST_GATE_TRAININGS or yes:
        return
    what = (
        f"the audits would train {plan.trainings} extra models (each about as long as one training of the model; "
        f"--oracles {oracles or plan.oracles})"
    )
    if not sys.stdin.isatty():
        raise ConfigError(f"{what}, over {COST_GATE_TRAININGS} without confirmation: pass --yes, or lower --oracles")
    answer = input(f"unlearnkit {verb}: {what}. Continue? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise ConfigError("not confirmed; nothing was trained")


def kv(items: Sequence[str] | None, what: str = "--set") -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict of strings; a clear error naming the flag otherwise."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def num(v: str) -> Any:
    """A ``--grid``/``--set`` value as int, float or bool when it reads as one, else the text."""
    for t in (int, float):
        try:
            return t(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def warn(verb: str, message: str) -> None:
    """An event of a job (a note, a cost estimate, a warning), as one line on stderr."""
    print(f"unlearnkit {verb}: {message}" if verb else f"unlearnkit: {message}", file=sys.stderr)


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
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


def print_record(record: dict[str, Any], title: str | None = None) -> None:
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
