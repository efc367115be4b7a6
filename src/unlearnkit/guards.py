"""Checks of the engineer's path that run before any compute (issue 24): is this checkpoint a model of that
dataset, does the method fit it, is this text a usable request subject or id, is this folder a registered model
directory. Each raises a `ConfigError` / `IncompatibleError` naming the problem and the fix (CLI flags in
parentheses, so one message serves the API and the CLI)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError, IncompatibleError

#: Files that make a folder a registered model directory (`unlearnkit.ledger`).
LEDGER_MARKERS = ("ledger.db", "ledger.head")


def is_model_directory(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and any((p / m).exists() for m in LEDGER_MARKERS)


def check_not_model_directory(path: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse to write outputs into a registered model directory (it would replace the model its ledger
    records, deleted images included)."""
    if is_model_directory(path):
        raise ConfigError(
            f"{flag} {path} is a registered model directory (it holds a deletion-request ledger): writing there "
            "would replace the model the ledger records; pick another folder, or delete data from it with "
            "`unlearnkit request add/apply`"
        )


def check_text(value: object, what: str, *, max_len: int = 1000) -> str:
    """A request subject or id: non-empty, one line, printable, valid UTF-8, at most ``max_len`` characters."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{what} is empty; name who or what the request is about")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"{what} is not valid UTF-8 text; pass it as UTF-8") from None
    bad = sorted({repr(c) for c in value if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")})
    if bad:
        raise ConfigError(
            f"{what} holds control characters ({', '.join(bad[:3])}): a newline would forge a line in "
            "`request list`; pass one line of printable text"
        )
    if len(value) > max_len:
        raise ConfigError(f"{what} is {len(value)} characters long; at most {max_len}")
    return value


def check_method_for_kind(kind: str, method: str, config: dict[str, Any] | None, name: str) -> None:
    """The method declares the checkpoint kinds it deletes from (``Requirements.model_kinds``): a SISA ensemble is
    deleted from with ``sisa`` only (which takes no options on an ensemble), a head model with ``head`` only, and
    ``head`` needs a head model."""
    from .methods import METHODS

    kinds = METHODS.get(method).requires.model_kinds
    if kind == "sisa":
        if kind not in kinds:
            raise IncompatibleError(
                f"{name} is a SISA ensemble: delete from it with --method sisa (exact, retrains only the affected "
                f"shards); {method!r} cannot train an ensemble's members"
            )
        if config:
            raise ConfigError(
                f"--set {', '.join(sorted(config))} has no effect on a SISA ensemble: its deletions retrain with the "
                "recipe stored in it (exactness needs that recipe); drop --set"
            )
        return
    if kind in kinds:
        return
    if kind == "head":
        raise IncompatibleError(
            f"{name} is a head model (a frozen backbone with a ridge or certified head): delete from it with "
            f"--method head (exact, or (ε, δ)-certified); {method!r} would train it like a network and void the "
            "guarantee"
        )
    raise IncompatibleError(
        f"{method!r} deletes from {' or '.join(sorted(kinds))} models only and {name} is a {kind} model: pick "
        "another --method (e.g. auto), or train a head model with `unlearnkit train --head ridge|certified …`"
    )


def check_deletable(model_path: str | os.PathLike, sel: list[int], spec: str | None) -> list[int]:
    """The training indices of a request that the model at ``model_path`` can delete. A head model deletes only
    what its head was trained on: a class-wise request (``spec``) takes its deletable images, a request naming
    public indices (the split that trained the backbone) is refused. Other kinds: ``sel`` unchanged."""
    from .jobs.checkpoints import deletable_indices

    allowed = deletable_indices(model_path) if Path(model_path).is_file() else None
    if allowed is None:
        return sel
    ok = set(allowed)
    public = [i for i in sel if i not in ok]
    if public and spec is None:
        raise IncompatibleError(
            f"training indices {public[:5]}{'…' if len(public) > 5 else ''} are public (the split that trained the "
            "head model's backbone), not its deletable data: the head model cannot delete them; request only "
            "indices its head was trained on"
        )
    sel = [i for i in sel if i in ok]
    if not sel:
        raise IncompatibleError(f"request spec {spec!r}: none of its images is in the head model's deletable data")
    return sel


def _dataset_fields(info: Any) -> dict[str, Any]:
    return {"num_classes": info.num_classes, "in_channels": info.channels, "image_size": info.image_size}


def checkpoint_summary(path: str | os.PathLike) -> dict[str, Any]:
    """kind (``sisa`` | ``head`` | ``plain``), the member/model config and the recorded dataset of a checkpoint,
    read from its metadata; a file that is no checkpoint raises `CheckpointError` naming it."""
    import json

    from .heads.files import HEAD_META_KEY, read_spec
    from .models import checkpoint_info
    from .sisa import SISA_META_KEY

    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {p} is a folder; pass the .safetensors file inside it")
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist")
    info = checkpoint_info(p)
    if p.suffix not in (".pt", ".pth", ".bin"):
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        if SISA_META_KEY in meta:
            try:
                spec = json.loads(meta[SISA_META_KEY])
            except ValueError:
                raise CheckpointError(f"{p.name}: its SISA spec is not valid JSON") from None
            return {"kind": "sisa", "config": spec.get("member"), "dataset": spec.get("dataset")}
        if HEAD_META_KEY in meta:
            head = read_spec(p) or {}
            backbone = (head.get("backbone") or {}).get("config") or {}
            cfg = {k: backbone[k] for k in ("in_channels", "image_size") if k in backbone}
            cfg["num_classes"] = head.get("num_classes")
            return {"kind": "head", "config": cfg, "dataset": head.get("dataset")}
    return {"kind": "plain", "config": info.get("config"), "dataset": info.get("dataset")}


def check_checkpoint_for(
    path: str | os.PathLike,
    bundle_info: Any,
    *,
    method: str | None = None,
    config: dict[str, Any] | None = None,
    dataset_flag: str = "--dataset",
) -> str:
    """Before any compute: the checkpoint at ``path`` is a model of the dataset ``bundle_info`` (classes, channels,
    image size; the dataset name where the file records one), and ``method``/``config`` fit its kind. Returns the
    kind (``sisa``, ``head`` or ``plain``)."""
    s = checkpoint_summary(path)
    name = Path(path).name
    recorded = s.get("dataset")
    if recorded and recorded != bundle_info.name:
        raise IncompatibleError(
            f"{name} was trained on {recorded!r}, not {bundle_info.name!r}; pass {dataset_flag} {recorded}"
        )
    cfg = s.get("config") or {}
    if s["kind"] == "plain" and not cfg:
        raise CheckpointError(
            f"{name} holds weights without the model config that names its architecture: save it with "
            "unlearnkit.models.save_model(model, path) (or train it with `unlearnkit train`) and pass that file"
        )
    want = _dataset_fields(bundle_info)
    wrong = [f"{k}={cfg.get(k)!r} (the dataset has {v!r})" for k, v in want.items() if k in cfg and cfg[k] != v]
    if wrong:
        raise IncompatibleError(
            f"{name} is not a model of {bundle_info.name!r}: {', '.join(wrong)}; pass the dataset it was trained on "
            f"({dataset_flag})"
        )
    if method is not None:
        check_method_for_kind(s["kind"], method, config, name)
    return str(s["kind"])


__all__ = [
    "LEDGER_MARKERS",
    "check_checkpoint_for",
    "check_deletable",
    "check_method_for_kind",
    "check_not_model_directory",
    "check_text",
    "checkpoint_summary",
    "is_model_directory",
]
