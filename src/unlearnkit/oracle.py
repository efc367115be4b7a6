"""Originals and retrained oracles, trained once and kept in a verified, content-addressed cache.

The cache key is a SHA-256 of (dataset content digest, model config, recipe, split digest, seed, training-code
version), so the same request returns the stored model in seconds instead of training again, and a changed
dataset (a swapped image, relabelled classes) is a different key. Each entry's ``model.safetensors`` stores the
SHA-256 of its weights; a read verifies it (once per process), and a truncated, unreadable or modified entry is
discarded with a one-line warning and retrained. ``UNLEARNKIT_CACHE`` overrides the default folder;
``use_cache=False`` (``--no-cache``, or ``UNLEARNKIT_NO_CACHE=1``) neither reads nor writes the cache.

Each key is trained once even when several processes ask for it at the same time (a bench on a Ray cluster, two
``--part`` invocations): the trainer holds an exclusive ``flock`` on ``<key>.lock`` beside the entry while it
trains, and a process that finds the entry missing waits for that lock and then loads what the first one stored.
On several machines the lock works wherever the cache folder is one shared filesystem with working ``flock``
(local disks, NFS v4); the kernel releases it when its holder dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._io import read_json, sha256_json, write_dir_atomic, write_json_atomic
from .cache import CacheWarning, cache_dir, check_cache_writable, save_verified, tensors_sha256, verify_file
from .data.datasets import DatasetBundle, bundle_digest, load_dataset
from .data.splits import Split, split_for
from .device import resolve_device
from .models import (
    DATASET_KEY,
    META_KEY,
    ROLE_KEY,
    SPLIT_KEY,
    create_model,
    load_into,
    model_config,
    model_for_dataset,
    save_model,
)
from .training import Recipe, accuracy, default_recipe, train

TRAIN_CODE_VERSION = 2  # 2: verified entries, dataset content digest in the key


def cache_enabled(use_cache: bool = True) -> bool:
    """False when the caller, the `unlearnkit.settings` scope (``--no-cache``) or ``$UNLEARNKIT_NO_CACHE`` asks to
    bypass the cache."""
    from .settings import model_cache_default

    return use_cache and model_cache_default()


@dataclass
class TrainedModel:
    model: nn.Module
    meta: dict[str, Any]
    from_cache: bool
    path: Path | None = None


@contextlib.contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Run the block on a fork of torch's CPU RNG (and the device's CUDA RNG): whatever it seeds or draws, the
    global generators are restored afterwards. The draws inside are the same as without the fork."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def oracle_key(
    dataset: str, model_cfg: dict[str, Any], recipe: Recipe, split: Split, seed: int, data_digest: str | None = None
) -> str:
    return sha256_json(
        {
            "dataset": dataset,
            "data": data_digest,
            "model": model_cfg,
            "recipe": recipe.to_dict(),
            "split": split.sha256,
            "seed": seed,
            "code": TRAIN_CODE_VERSION,
        }
    )


def models_root() -> Path:
    return cache_dir() / "models"


def entry_folder(key: str) -> Path:
    return models_root() / key[:2] / key


def _discard(folder: Path, why: str) -> None:
    warnings.warn(
        f"discarding cached model {folder.name[:16]}… ({folder}): {why}; retraining it", CacheWarning, stacklevel=3
    )
    shutil.rmtree(folder, ignore_errors=True)


def load_entry(folder: Path, device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, Any]] | None:
    """The verified model and meta of a cache entry, or None (a damaged entry is warned about and removed)."""
    weights, meta_path = folder / "model.safetensors", folder / "meta.json"
    if not weights.is_file() and not meta_path.is_file():
        return None
    if not weights.is_file() or not meta_path.is_file():
        _discard(folder, "incomplete entry")
        return None
    try:
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
            raise ValueError("meta.json is not an object with the model config")
    except (OSError, ValueError) as exc:
        _discard(folder, f"unreadable meta.json ({type(exc).__name__})")
        return None
    ok, why, state, file_meta = verify_file(weights)
    if not ok:
        _discard(folder, why)
        return None
    if file_meta.get("unlearnkit_sha256") != meta.get("weights_sha256"):
        _discard(folder, "meta.json does not belong to these weights")
        return None
    try:
        cfg = meta["model"]
        net = create_model(
            cfg["name"],
            cfg["num_classes"],
            cfg["in_channels"],
            cfg["image_size"],
            cfg.get("mean"),
            cfg.get("std"),
            **cfg.get("kwargs", {}),
        )
        load_into(net, state, source=f"cache entry {folder.name[:16]}…")  # type: ignore[arg-type]
    except Exception as exc:
        _discard(folder, f"does not match its config ({type(exc).__name__})")
        return None
    return net.to(device), meta


def train_or_load(
    data: DatasetBundle | str,
    model: str,
    split: Split | None = None,
    *,
    seed: int = 0,
    recipe: Recipe | None = None,
    model_kwargs: dict[str, Any] | None = None,
    data_dir: str | None = None,
    device: str | torch.device = "auto",
    use_cache: bool = True,
    progress: bool | None = None,
) -> TrainedModel:
    """The original model (``split`` None or with an empty forget set) or the retrained oracle (retain only).

    Returns the cached model when a verified entry exists for the same inputs; otherwise trains and stores it
    (``use_cache=False`` bypasses the cache: no read, no write). A key missing from the cache is trained by one
    process at a time (see the module docstring): a second caller waits and then loads the stored entry.
    """
    bundle = load_dataset(data, data_dir) if isinstance(data, str) else data
    info = bundle.info
    if split is None:
        split = split_for(bundle, None, seed)
    dev = resolve_device(device)
    with _own_rng(dev):  # building a net draws from the RNG: the caller's generator stays untouched
        net = model_for_dataset(model, info, **(model_kwargs or {}))
    recipe = recipe or default_recipe(info.name, model)
    cfg = model_config(net)
    assert cfg is not None  # model_for_dataset (create_model) always sets it
    digest = bundle_digest(bundle)
    key = oracle_key(info.name, cfg, recipe, split, seed, digest)
    folder = entry_folder(key)

    def fit(store: Path | None) -> TrainedModel:
        return _train(
            bundle,
            model,
            split,
            seed,
            recipe,
            model_kwargs,
            dev,
            progress,
            {"model": cfg, "key": key, "dataset_sha256": digest},
            store,
        )

    if not cache_enabled(use_cache):
        return fit(None)
    with _own_rng(dev):
        hit = load_entry(folder, dev)
    if hit is not None:
        return TrainedModel(hit[0], hit[1], True, folder)
    check_cache_writable()
    with entry_lock(folder):  # another process may be training this key: wait for it, then load its entry
        with _own_rng(dev):
            hit = load_entry(folder, dev)
        if hit is not None:
            return TrainedModel(hit[0], hit[1], True, folder)
        return fit(folder)


@contextlib.contextmanager
def entry_lock(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of one cache entry (``<key>.lock`` beside its folder) for the block; blocks until
    no other process holds it."""
    lock = folder.with_name(folder.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _train(
    bundle: DatasetBundle,
    model: str,
    split: Split,
    seed: int,
    recipe: Recipe,
    model_kwargs: dict[str, Any] | None,
    dev: torch.device,
    progress: bool | None,
    ident: dict[str, Any],
    folder: Path | None,
) -> TrainedModel:
    """Train one original or oracle from its seed; store it in ``folder`` (None: not cached). ``ident``: the
    model config, the cache key and the dataset digest `train_or_load` computed."""
    from . import __version__

    info = bundle.info
    role = "retrained" if len(split.forget) else "original"
    with _own_rng(dev):  # seeded init and training on a fork of the RNG: the caller's generator is untouched
        torch.manual_seed(seed)
        net = model_for_dataset(model, info, **(model_kwargs or {}))
        train_set = bundle.train.subset(split.retain)
        t0 = time.perf_counter()
        stats = train(
            net,
            train_set,
            recipe,
            seed=seed,
            augment=info.augment,
            device=dev,
            progress=progress,
            desc=f"{role} {info.name}/{model} seed {seed}",
        )
    wall = time.perf_counter() - t0
    meta = {
        "role": role,
        "dataset": info.name,
        "dataset_sha256": ident["dataset_sha256"],
        "model": ident["model"],
        "split_spec": split.spec,
        "split_sha256": split.sha256,
        "manipulation": getattr(bundle, "manipulation", None) or None,
        "seed": seed,
        "recipe": recipe.to_dict(),
        "accuracy_test": accuracy(net, bundle.test, device=dev),
        "accuracy_train": accuracy(net, bundle.train.subset(split.retain), device=dev),
        "accuracy_forget": accuracy(net, bundle.train.subset(split.forget), device=dev) if len(split.forget) else None,
        "wall_seconds": round(wall, 3),
        "steps": stats.steps,
        "device": str(dev),
        "unlearnkit_version": __version__,
        "torch_version": torch.__version__,
        "cache_key": ident["key"],
    }
    if folder is not None:
        save_cache_entry(folder, net, meta)
    return TrainedModel(net, meta, False, folder)


def checkpoint_metadata(meta: dict[str, Any]) -> dict[str, str]:
    """The safetensors metadata that travels with a trained model: config, role, split digest, dataset."""
    out = {
        ROLE_KEY: str(meta.get("role", "")),
        SPLIT_KEY: str(meta.get("split_sha256", "")),
        DATASET_KEY: str(meta.get("dataset", "")),
    }
    if meta.get("model") is not None:
        out[META_KEY] = json.dumps(meta["model"])
    return out


def save_cache_entry(folder: Path, net: nn.Module, meta: dict[str, Any]) -> Path:
    """Write one entry: verified weights (SHA-256 in the file), then meta.json holding the same SHA-256."""
    save_verified(folder / "model.safetensors", net.state_dict(), checkpoint_metadata(meta))
    meta["weights_sha256"] = tensors_sha256(net.state_dict())
    write_json_atomic(folder / "meta.json", meta)
    return folder


def export(trained: TrainedModel, out: str | os.PathLike, split: Split | None = None) -> Path:
    """Write ``model.safetensors`` (role and split digest in its metadata), ``meta.json`` and ``split.json``.

    The files are written into a temporary sibling folder and moved into ``out`` at the end (meta.json last).
    """
    meta = {k: v for k, v in trained.meta.items() if k != "weights_sha256"}

    def fill(tmp: Path) -> None:
        save_model(trained.model, tmp / "model.safetensors", extra=checkpoint_metadata(trained.meta))
        if split is not None:
            split.save(tmp / "split.json")
        write_json_atomic(tmp / "meta.json", meta)

    return write_dir_atomic(out, fill, last="meta.json")


def parse_recipe_overrides(raw: dict[str, str]) -> dict[str, Any]:
    """``--recipe KEY=VALUE`` strings to typed `Recipe` fields, with a clear error per unknown key or bad value."""
    from dataclasses import fields

    from .errors import ConfigError

    kinds = {f.name: f.type for f in fields(Recipe)}
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in kinds:
            raise ConfigError(f"--recipe has no key {k!r}; keys: {', '.join(kinds)}")
        kind = str(kinds[k])
        try:
            if kind == "int":
                out[k] = int(v)
            elif kind == "float":
                out[k] = float(v)
                if out[k] != out[k] or out[k] in (float("inf"), float("-inf")):
                    raise ValueError
            elif kind == "bool":
                if v.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                out[k] = v.lower() in ("true", "1", "yes")
            else:
                out[k] = v
        except ValueError:
            want = {"int": "an integer", "float": "a finite number", "bool": "true or false"}.get(kind, kind)
            raise ConfigError(f"--recipe {k}={v!r}: expected {want}") from None
    if out:
        try:
            Recipe(**out)  # ranges (epochs ≥ 1, lr > 0, names) checked now, before any data is loaded
        except TypeError as exc:
            raise ConfigError(f"bad --recipe: {exc}") from None
    return out
