"""One unlearning experiment end to end: original and retrained oracle (cached), unlearn, evaluate.

`run_experiment` is what `unlearnkit run`, `unlearnkit demo` and the benchmark runner call. Every check runs
before any compute: names, forget spec, method config and method × split compatibility.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .data import load_dataset, parse_forget_spec, split_for
from .data.splits import Split
from .device import resolve_device
from .errors import IncompatibleError
from .methods import METHODS, RunContext, UnlearnData, create_method, frozen_copy, preset_config
from .models import MODELS, load_model, save_model
from .oracle import train_or_load

NOISE_FLOOR_SEED_OFFSET = 1000


@dataclass
class Experiment:
    record: dict[str, Any]
    unlearned: nn.Module
    split: Split


def split_kind(spec: str) -> str:
    return "class" if parse_forget_spec(spec).kind == "class" else "random"


def prepare_method(method: str, dataset: str, model: str, forget: str, overrides: dict[str, Any] | None = None,
                   preset: str | None = None):
    """Resolve presets + overrides into a validated method (raises before any compute)."""
    kind = split_kind(forget)
    cls = METHODS.get(method)
    if kind not in cls.requires.split_kinds:
        raise IncompatibleError(f"method {METHODS.canonical(method)!r} supports only "
                                f"{'/'.join(sorted(cls.requires.split_kinds))} forgetting, not {kind} ({forget!r})")
    return create_method(method, dataset=dataset, model=model, kind=kind, preset=preset, **(overrides or {}))


def run_experiment(dataset: str, model: str, forget: str, method: str, *, overrides: dict[str, Any] | None = None,
                   seed: int = 0, model_kwargs: dict[str, Any] | None = None, metrics: list[str] | None = None,
                   device: str = "auto", data_dir: str | None = None, progress: bool | None = None,
                   original_path: str | None = None, preset: str | None = None, noise_floor: bool = True,
                   ) -> Experiment:
    """Run one (dataset, model, forget spec, method, seed) experiment and return its record and model."""
    from .evaluation import evaluate

    MODELS.get(model)
    parse_forget_spec(forget)
    m = prepare_method(method, dataset, model, forget, overrides, preset)
    dev = resolve_device(device)
    bundle = load_dataset(dataset, data_dir)
    split = split_for(bundle, forget, seed)
    model_kwargs = dict(model_kwargs or {})

    if original_path:
        info = bundle.info
        original = load_model(original_path, expect={"num_classes": info.num_classes, "in_channels": info.channels},
                              device=dev)
        original_meta: dict[str, Any] = {"source": Path(original_path).name}
    else:
        t = train_or_load(bundle, model, None, seed=seed, model_kwargs=model_kwargs, device=dev, progress=progress)
        original, original_meta = t.model, t.meta
    retrained = train_or_load(bundle, model, split, seed=seed, model_kwargs=model_kwargs, device=dev, progress=progress)
    second = None
    if noise_floor:
        second = train_or_load(bundle, model, split, seed=seed + NOISE_FLOOR_SEED_OFFSET, model_kwargs=model_kwargs,
                               device=dev, progress=progress).model

    data = UnlearnData(forget=bundle.train.subset(split.forget), retain=bundle.train.subset(split.retain),
                       test=bundle.test, split=split, augment=bundle.info.augment, num_classes=bundle.info.num_classes)
    ctx = RunContext(dev, seed, original=frozen_copy(original), progress=progress)
    work = copy.deepcopy(original)
    torch.manual_seed(seed)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    unlearned = m.unlearn(work, data, ctx)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    runtime = time.perf_counter() - t0

    _, preset_source = preset_config(method, bundle.info.name, model, split_kind(forget), preset)
    record = evaluate(unlearned, bundle, split, original=original, retrained=retrained.model, metrics=metrics,
                      device=dev, runtime_seconds=runtime, retrain_seconds=retrained.meta.get("wall_seconds"),
                      noise_floor=second, method=METHODS.canonical(method), config=m.config.to_dict(), seed=seed)
    record.setdefault("method", {})["preset"] = preset_source
    record["model"]["kwargs"] = model_kwargs
    record["model"]["original_recipe"] = original_meta.get("recipe")
    return Experiment(record, unlearned, split)


def save_experiment(exp: Experiment, out: str | Path) -> Path:
    """Write record.json, unlearned.safetensors and split.json into ``out`` (each atomically)."""
    from .evaluation import write_record

    out = Path(out)
    save_model(exp.unlearned, out / "unlearned.safetensors")
    exp.split.save(out / "split.json")
    exp.record.setdefault("files", {}).update({"unlearned": "unlearned.safetensors", "split": "split.json"})
    write_record(exp.record, out / "record.json")
    return out
