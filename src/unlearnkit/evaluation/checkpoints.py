"""Evaluate checkpoints on disk (``unlearnkit eval``): split digest and runtimes come from their folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import read_json
from ..data.splits import ForgetSpec
from ..errors import CheckpointError, IncompatibleError

__all__ = ["check_checkpoint_roles", "checkpoint_split_sha256", "evaluate_checkpoints"]


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


def evaluate_checkpoints(
    model: str | Path,
    retrained: str | Path,
    *,
    dataset: str,
    forget: str | ForgetSpec,
    seed: int = 0,
    original: str | Path | None = None,
    metrics: str | Sequence[str] | None = None,
    device: str = "auto",
    data_dir: str | None = None,
    audits: str | Sequence[str] | None = None,
) -> dict[str, Any]:
    """Evaluate an unlearned checkpoint against the retrained one (and the original) and return the record.

    The split is made from ``dataset``, ``forget`` and ``seed``; it must be the one the retrained checkpoint was
    trained for (its ``meta.json`` or ``split.json``). The unlearning runtime comes from the unlearned
    checkpoint's ``record.json`` and the retraining time from the retrained one's ``meta.json``, when present.
    All checks run before any model is loaded.
    """
    from ..data import load_dataset, split_for
    from ..models import load_model
    from .api import EvalOptions, RunInfo, evaluate

    for what, path in (("unlearned", model), ("retrained", retrained), ("original", original)):
        if path is not None and not Path(path).is_file():
            raise CheckpointError(f"the {what} checkpoint {path} does not exist")
    bundle = load_dataset(dataset, data_dir)
    split = split_for(bundle, forget, seed)
    want = checkpoint_split_sha256(retrained)
    if want is not None and want != split.sha256:
        raise IncompatibleError(
            f"the retrained checkpoint {retrained} was trained for split {want[:12]}…, "
            f"but forget spec {_text(forget)} with seed {seed} gives split {split.sha256[:12]}…; "
            "pass the forget spec and seed it was trained with, or retrain on this split"
        )
    expect = {"num_classes": bundle.info.num_classes}
    runtime, setup = _runtime_from_folder(model)
    return evaluate(
        load_model(model, expect=expect),
        bundle,
        split,
        original=load_model(original, expect=expect) if original else None,
        retrained=load_model(retrained, expect=expect),
        device=device,
        run=RunInfo(
            runtime_seconds=runtime,
            runtime_setup_seconds=setup,
            retrain_seconds=_meta_number(retrained, "wall_seconds"),
            seed=seed,
            retrained_split_sha256=want,
        ),
        options=EvalOptions(metrics=metrics, audits=audits),
    )


def check_checkpoint_roles(
    model: str | Path,
    retrained: str | Path,
    original: str | Path | None = None,
    *,
    dataset: str,
    forget: str | ForgetSpec,
    seed: int,
    data_dir: str | None = None,
) -> None:
    """Before any compute: each checkpoint's stored role and split digest against the forget spec, seed and dataset
    (messages name the ``unlearnkit eval`` flags)."""
    from ..data import load_dataset, split_for
    from ..models import checkpoint_info

    paths = {"--model": model, "--retrained": retrained, "--original": original}
    for flag, path in paths.items():
        if path is not None and Path(path).is_dir():
            raise IncompatibleError(f"{flag} {path} is a folder; pass the .safetensors file inside it")
        if path is not None and not Path(path).exists():
            raise IncompatibleError(f"{flag} checkpoint {path} does not exist")
    infos = {flag: checkpoint_info(path) for flag, path in paths.items() if path is not None and Path(path).is_file()}
    if infos.get("--original", {}).get("role") == "retrained":
        raise IncompatibleError(
            f"--original {original} is a retrained oracle (stored role 'retrained'); "
            "pass the model trained on the full training set"
        )
    role = infos.get("--retrained", {}).get("role")
    if role in ("original", "unlearned"):
        raise IncompatibleError(
            f"--retrained {retrained} is an {role} model (stored role); pass the model "
            "retrained on the retain set (`unlearnkit train --forget …`)"
        )
    if not any(i["split_sha256"] for f, i in infos.items() if f != "--original"):
        return
    bundle = load_dataset(dataset, data_dir)
    split = split_for(bundle, forget, seed)
    for flag in ("--model", "--retrained"):
        want = infos.get(flag, {}).get("split_sha256")
        if want and want != split.sha256:
            raise IncompatibleError(
                f"{flag} {paths[flag]} was made for split {want[:12]}… (stored in the "
                f"checkpoint), but --forget {_text(forget)} --seed {seed} gives split "
                f"{split.sha256[:12]}…; pass the forget spec and seed it was made with"
            )


def _text(forget: str | ForgetSpec) -> str:
    """The forget spec as the user wrote it."""
    return (forget.source or str(forget)) if isinstance(forget, ForgetSpec) else forget
