"""The head-training job (``unlearnkit train --head ridge|certified --backbone …``): a frozen backbone, a head with a
guarantee on the deletable data, and the backbone's provenance, written to a folder a ledger can register.

The backbone is a model name (trained here, through the verified cache: on the public split with
``public_split``, else on the whole training set) or a checkpoint file (then ``backbone_data`` says what it was
trained on). With ``public_split=P`` a seeded fraction P of the training set is public: it trains the backbone
and never the head, so the guarantee covers the whole model; the head trains on the rest, the deletable data.
Everything is checked before any data is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError, IncompatibleError


def parse_head_args(kind: str, raw: dict[str, str]) -> dict[str, Any]:
    """``--head-arg KEY=VALUE`` strings to typed options of the ``kind`` head, validated (ε > 0, 0 < δ < 1, …)."""
    from ..heads.model import HEAD_KINDS, build_head

    if kind not in HEAD_KINDS:
        raise ConfigError(f"unknown head {kind!r}; use --head {' or --head '.join(HEAD_KINDS)}")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            out[k] = int(v) if k == "noise_seed" else float(v)
        except ValueError:
            raise ConfigError(
                f"--head-arg {k}={v!r}: expected {'an integer' if k == 'noise_seed' else 'a number'}"
            ) from None
    try:
        build_head(kind, 2, 2, out)  # every value checked here, before any data is read
    except ConfigError as exc:
        raise ConfigError(f"--head-arg: {exc}") from None
    return out


def train_head_job(
    dataset: str,
    head: str,
    backbone: str,
    out: str | Path,
    *,
    public_split: float | None = None,
    backbone_data: str | None = None,
    head_args: dict[str, str] | None = None,
    seed: int = 0,
    epochs: int | None = None,
    recipe: dict[str, str] | None = None,
    model_args: dict[str, str] | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    use_cache: bool = True,
) -> dict[str, Any]:
    """Train (or take the backbone from the cache) and write ``model.safetensors`` and ``head.json`` into ``out``."""
    from dataclasses import replace

    from .._io import write_dir_atomic, write_json_atomic
    from ..data import load_dataset, split_for
    from ..device import resolve_device
    from ..heads.model import train_head
    from ..models import MODELS, parse_model_args
    from ..oracle import parse_recipe_overrides, train_or_load
    from ..training import accuracy, default_recipe
    from .checkpoints import checkpoint_kind, load_checkpoint, save_checkpoint

    options = parse_head_args(head, dict(head_args or {}))
    if public_split is not None and not 0 < public_split < 1:
        raise ConfigError(f"--public-split must be a fraction in (0, 1), e.g. 0.5; got {public_split}")
    named = backbone in MODELS
    path = Path(backbone)
    if named:
        if backbone_data is not None:
            raise ConfigError(
                "--backbone-data is for a backbone checkpoint file; a named backbone is trained here, on the public "
                "split with --public-split, else on the whole training set (then the guarantee covers the head only)"
            )
        model_kwargs = parse_model_args(backbone, dict(model_args or {}))
        overrides: dict[str, Any] = parse_recipe_overrides(dict(recipe or {}))
        if epochs is not None:
            overrides["epochs"] = epochs
    else:
        if path.is_dir() or not path.is_file():
            raise ConfigError(
                f"--backbone {backbone}: neither a model name ({', '.join(MODELS.names())}) nor a checkpoint file"
                + (" (it is a folder: pass the .safetensors file inside it)" if path.is_dir() else "")
            )
        if checkpoint_kind(path) != "plain":
            raise IncompatibleError(f"--backbone {backbone} is a {checkpoint_kind(path)} model; pass one network")
        if backbone_data not in ("public", "same"):
            raise ConfigError(
                "--backbone FILE needs --backbone-data public (it was trained on other data: a public split or a "
                "public pre-training; the guarantee then covers the whole model) or same (trained on this data; "
                "the guarantee covers the head only)"
            )
        if model_args or recipe or epochs is not None:
            raise ConfigError("--model-arg/--recipe/--epochs shape a backbone trained here; a checkpoint is used as is")
    bundle = load_dataset(dataset, data_dir)
    dev = resolve_device(device)
    split = split_for(bundle, f"random:{1 - public_split:g}", seed) if public_split is not None else None
    indices = split.forget if split is not None else None  # the deletable data
    public = (
        {
            "spec": f"random:{1 - public_split:g}",
            "seed": seed,
            "sha256": split.sha256,
            "public": len(split.retain),
            "deletable": len(split.forget),
        }
        if split is not None and public_split is not None
        else None
    )
    if named:
        rec = default_recipe(bundle.info.name, backbone)
        if overrides:
            try:
                rec = replace(rec, **overrides)
            except TypeError as exc:
                raise ConfigError(f"bad --recipe key: {exc}") from None
        trained = train_or_load(
            bundle, backbone, split, seed=seed, recipe=rec, model_kwargs=model_kwargs, device=dev, use_cache=use_cache
        )
        net, trained_on = trained.model, "public" if split is not None else "same"
        what = (
            f"the public split {public['spec']} (seed {seed}; its retain part)" if public else "the whole training set"
        )
        source = f"{MODELS.canonical(backbone)} trained on {bundle.info.name}, {what}"
    else:
        from ..models import checkpoint_info

        info = checkpoint_info(path)
        if backbone_data == "public" and info.get("role") == "original" and info.get("dataset") == bundle.info.name:
            raise IncompatibleError(
                f"--backbone-data public, but {path.name} records being the original model of {bundle.info.name} "
                "(trained on every training image, the deletable ones included): pass --backbone-data same"
            )
        net = load_checkpoint(path)
        trained_on, source = str(backbone_data), f"checkpoint {path.name} (declared: trained on {backbone_data} data)"
    model = train_head(
        net,
        bundle.train,
        head=head,
        trained_on=trained_on,
        indices=indices,
        num_classes=bundle.info.num_classes,
        source=source,
        public_split=public,
        dataset=bundle.info.name,
        device=dev,
        cache=use_cache,
        **options,
    )
    summary: dict[str, Any] = {
        "role": "head",
        **model.summary(),
        "accuracy_test": round(accuracy(model, bundle.test, device=dev), 2),
        "backbone_accuracy_test": round(accuracy(net, bundle.test, device=dev), 2) if named else None,
        "train_seconds": round(model.spec.train_seconds or 0.0, 2),
    }
    if public is not None:
        summary["public_split"] = public

    def fill(tmp: Path) -> None:
        save_checkpoint(model, tmp / "model.safetensors")
        write_json_atomic(tmp / "head.json", summary)

    write_dir_atomic(out, fill, last="head.json")
    return {"out": str(Path(out) / "model.safetensors"), **summary}


__all__ = ["parse_head_args", "train_head_job"]
