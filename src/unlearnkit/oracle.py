"""Originals and retrained oracles, trained once and kept in a content-addressed cache.

The cache key is a SHA-256 of (dataset, model config, recipe, split digest, seed, training-code version), so
the same request returns the stored model in seconds instead of training again. ``UNLEARNKIT_CACHE``
overrides the default folder (the user's cache folder).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import read_json, sha256_json, write_json_atomic
from .data.datasets import DatasetBundle, load_dataset
from .data.splits import Split, split_for
from .device import resolve_device
from .models import load_model, model_for_dataset, save_model
from .training import Recipe, accuracy, default_recipe, train

TRAIN_CODE_VERSION = 1


def cache_dir() -> Path:
    if os.environ.get("UNLEARNKIT_CACHE"):
        return Path(os.environ["UNLEARNKIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unlearnkit"


@dataclass
class TrainedModel:
    model: nn.Module
    meta: dict[str, Any]
    from_cache: bool
    path: Path | None = None


def oracle_key(dataset: str, model_cfg: dict[str, Any], recipe: Recipe, split: Split, seed: int) -> str:
    return sha256_json({"dataset": dataset, "model": model_cfg, "recipe": recipe.to_dict(), "split": split.sha256,
                        "seed": seed, "code": TRAIN_CODE_VERSION})


def train_or_load(data: DatasetBundle | str, model: str, split: Split | None = None, *, seed: int = 0,
                  recipe: Recipe | None = None, model_kwargs: dict[str, Any] | None = None, data_dir: str | None = None,
                  device: str | torch.device = "auto", use_cache: bool = True, progress: bool | None = None,
                  ) -> TrainedModel:
    """The original model (``split`` None or with an empty forget set) or the retrained oracle (retain only).

    Returns the cached model when one exists for the same inputs; otherwise trains and stores it.
    """
    from . import __version__

    bundle = load_dataset(data, data_dir) if isinstance(data, str) else data
    info = bundle.info
    if split is None:
        split = split_for(bundle, None, seed)
    dev = resolve_device(device)
    net = model_for_dataset(model, info, **(model_kwargs or {}))
    recipe = recipe or default_recipe(info.name, model)
    cfg = net.unlearnkit_config  # type: ignore[attr-defined]
    key = oracle_key(info.name, cfg, recipe, split, seed)
    folder = cache_dir() / "models" / key[:2] / key
    role = "retrained" if len(split.forget) else "original"
    if use_cache and (folder / "meta.json").is_file() and (folder / "model.safetensors").is_file():
        meta = read_json(folder / "meta.json")
        return TrainedModel(load_model(folder / "model.safetensors", device=dev), meta, True, folder)

    torch.manual_seed(seed)
    net = model_for_dataset(model, info, **(model_kwargs or {}))
    train_set = bundle.train.subset(split.retain)
    t0 = time.perf_counter()
    stats = train(net, train_set, recipe, seed=seed, augment=info.augment, device=dev, progress=progress,
                  desc=f"{role} {info.name}/{model} seed {seed}")
    wall = time.perf_counter() - t0
    meta = {
        "role": role, "dataset": info.name, "model": cfg, "split_spec": split.spec, "split_sha256": split.sha256,
        "seed": seed, "recipe": recipe.to_dict(),
        "accuracy_test": accuracy(net, bundle.test, device=dev),
        "accuracy_train": accuracy(net, bundle.train.subset(split.retain), device=dev),
        "accuracy_forget": accuracy(net, bundle.train.subset(split.forget), device=dev) if len(split.forget) else None,
        "wall_seconds": round(wall, 3), "steps": stats.steps, "device": str(dev), "unlearnkit_version": __version__,
        "torch_version": torch.__version__, "cache_key": key,
    }
    if use_cache:
        save_model(net, folder / "model.safetensors")
        write_json_atomic(folder / "meta.json", meta)
    return TrainedModel(net, meta, False, folder if use_cache else None)


def export(trained: TrainedModel, out: str | os.PathLike, split: Split | None = None) -> Path:
    """Write ``model.safetensors``, ``meta.json`` (and ``split.json``) into ``out``, each atomically."""
    out = Path(out)
    save_model(trained.model, out / "model.safetensors")
    if split is not None:
        split.save(out / "split.json")
    write_json_atomic(out / "meta.json", trained.meta)
    return out
