"""`unlearnkit eval`: evaluate an unlearned checkpoint against the retrained one; writes DIR/record.json."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._io import read_json
from ..errors import CheckpointError, IncompatibleError


def checkpoint_split_sha256(checkpoint: str | Path) -> str | None:
    """Split digest stored beside a checkpoint: ``meta.json["split_sha256"]`` or ``split.json``, if present."""
    folder = Path(checkpoint).parent
    meta = folder / "meta.json"
    if meta.is_file():
        try:
            m = read_json(meta)
        except ValueError as exc:
            raise CheckpointError(f"{meta} is not valid JSON: {exc}") from exc
        if isinstance(m, dict) and m.get("split_sha256"):
            return str(m["split_sha256"])
    split_file = folder / "split.json"
    if split_file.is_file():
        from ..data import Split

        return Split.load(split_file).sha256
    return None


def _meta_number(checkpoint: str | Path, key: str) -> float | None:
    meta = Path(checkpoint).parent / "meta.json"
    if meta.is_file():
        try:
            m = read_json(meta)
        except ValueError:
            return None
        v = m.get(key) if isinstance(m, dict) else None
        return float(v) if isinstance(v, (int, float)) else None
    return None


def _runtime_from_folder(checkpoint: str | Path) -> tuple[float | None, float | None]:
    """(runtime, setup) of an unlearned checkpoint written by ``unlearnkit run`` (its record.json), if any."""
    rec = Path(checkpoint).parent / "record.json"
    if rec.is_file():
        try:
            r = read_json(rec)
            u = r["models"]["unlearned"]
            return u.get("runtime_seconds"), u.get("runtime_setup_seconds")
        except (ValueError, KeyError, TypeError):
            return None, None
    return None, None


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("metric", "original", "retrained", "unlearned", "gap"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for r in rows:
        table.add_row(*[f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c])
                        for c in ("metric", "original", "retrained", "unlearned", "gap")])
    Console().print(table)


def eval_command(args: argparse.Namespace) -> int:
    """Handler of ``unlearnkit eval`` (see ``unlearnkit eval --help``)."""
    from ..data import load_dataset, split_for
    from ..models import load_model
    from . import evaluate, format_table, write_record

    for flag, path in (("--model", args.model), ("--retrained", args.retrained), ("--original", args.original)):
        if path is not None and not Path(path).is_file():
            raise CheckpointError(f"{flag} checkpoint {path} does not exist")
    bundle = load_dataset(args.dataset, args.data_dir)
    split = split_for(bundle, args.forget, args.seed)
    want = checkpoint_split_sha256(args.retrained)
    if want is not None and want != split.sha256:
        raise IncompatibleError(f"the retrained checkpoint {args.retrained} was trained for split {want[:12]}…, "
                                f"but --forget {args.forget} --seed {args.seed} gives split {split.sha256[:12]}…; "
                                "pass the forget spec and seed it was trained with, or retrain on this split")
    expect = {"num_classes": bundle.info.num_classes}
    unlearned = load_model(args.model, expect=expect)
    retrained = load_model(args.retrained, expect=expect)
    original = load_model(args.original, expect=expect) if args.original else None
    runtime, setup = _runtime_from_folder(args.model)
    record = evaluate(unlearned, bundle, split, original=original, retrained=retrained, metrics=args.metrics,
                      device=args.device, runtime_seconds=runtime, runtime_setup_seconds=setup,
                      retrain_seconds=_meta_number(args.retrained, "wall_seconds"), seed=args.seed,
                      retrained_split_sha256=want)
    out = Path(args.out)
    path = write_record(record, out / "record.json")
    print_table(format_table(record), title=f"{bundle.info.name} {split.spec} seed {args.seed}")
    print(f"record: {path}")
    return 0
