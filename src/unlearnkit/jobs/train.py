"""The train job: an original, a retrained oracle (``forget``) or a SISA ensemble (``shards``), written to a folder.

Everything is checked before any data is loaded; the model comes from the verified cache when it is there.
Returns a summary (a dict the CLI prints as JSON).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import UnlearnkitError


def train_job(
    dataset: str,
    model: str,
    out: str | Path,
    *,
    forget: str | None = None,
    seed: int = 0,
    epochs: int | None = None,
    recipe: dict[str, str] | None = None,
    model_args: dict[str, str] | None = None,
    shards: int | None = None,
    slices: int = 1,
    aggregation: str = "vote",
    manipulation: str | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    use_cache: bool = True,
) -> dict[str, Any]:
    """Train (or take from the cache) and export one model; ``recipe``/``model_args`` are raw ``KEY=VALUE`` texts."""
    from ..data import load_dataset, split_for
    from ..data.manipulations import parse_manipulation
    from ..models import MODELS, parse_model_args
    from ..oracle import export, parse_recipe_overrides, train_or_load
    from ..training import default_recipe

    MODELS.get(model)  # unknown names fail before loading data
    model_kwargs = parse_model_args(model, dict(model_args or {}))
    overrides: dict[str, Any] = parse_recipe_overrides(dict(recipe or {}))
    if epochs is not None:
        overrides["epochs"] = epochs
    manip = parse_manipulation(manipulation)  # a bad spec fails before loading data
    if shards is not None:
        if shards < 1 or slices < 1:
            raise UnlearnkitError(f"--shards and --slices must be ≥ 1, got {shards} and {slices}")
        if forget or manip is not None:
            raise UnlearnkitError(
                "--shards trains a SISA ensemble on the full training set; delete data from it afterwards "
                "(`unlearnkit request`, or `unlearnkit unlearn --method sisa`) instead of --forget/--manipulation"
            )
    elif slices != 1 or aggregation != "vote":
        raise UnlearnkitError("--slices and --aggregation need --shards (a SISA ensemble)")
    bundle = load_dataset(dataset, data_dir)
    rec = default_recipe(bundle.info.name, model)
    if overrides:
        try:
            rec = replace(rec, **overrides)
        except TypeError as exc:
            raise UnlearnkitError(f"bad --recipe key: {exc}") from None
    if shards is not None:
        return _train_sisa(bundle, model, model_kwargs, rec, out, shards, slices, aggregation, seed, device, use_cache)
    if manip is not None:
        from .run import manipulate

        bundle = manipulate(bundle, manip, seed, model=model, model_kwargs=model_kwargs, device=device)
    split = split_for(bundle, forget, seed)
    trained = train_or_load(
        bundle, model, split, seed=seed, recipe=rec, model_kwargs=model_kwargs, device=device, use_cache=use_cache
    )
    path = export(trained, out, split)
    m = trained.meta
    return {
        "role": m["role"],
        "out": str(path),
        "from_cache": trained.from_cache,
        "accuracy_train": round(m["accuracy_train"], 2),
        "accuracy_test": round(m["accuracy_test"], 2),
        "wall_seconds": m["wall_seconds"],
    }


def _train_sisa(
    bundle: Any,
    model: str,
    model_kwargs: dict[str, Any],
    recipe: Any,
    out: str | Path,
    shards: int,
    slices: int,
    aggregation: str,
    seed: int,
    device: str,
    use_cache: bool,
) -> dict[str, Any]:
    from .. import sisa
    from ..device import resolve_device
    from ..models import model_for_dataset
    from ..training import accuracy
    from .checkpoints import save_checkpoint

    dev = resolve_device(device)
    ens = sisa.train_sisa(
        model_for_dataset(model, bundle.info, **model_kwargs),
        bundle.train,
        shards=shards,
        slices=slices,
        recipe=recipe,
        seed=seed,
        aggregation=aggregation,  # type: ignore[arg-type]
        device=dev,
        cache="default" if use_cache else None,
        augment=bundle.info.augment,
        dataset=bundle.info.name,
    )
    path = Path(out) / "model.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ens, path)
    return {
        "role": "sisa",
        "out": str(path),
        "shards": shards,
        "slices": slices,
        "aggregation": aggregation,
        "accuracy_test": round(accuracy(ens, bundle.test, device=dev), 2),
        "wall_seconds": round(ens.spec.train_seconds or 0.0, 1),
    }
