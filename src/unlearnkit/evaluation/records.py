"""Evaluation records (evaluation.md §8.2): build, write, read, aggregate over seeds, load into pandas.

A record is one JSON object per (method config, seed). Paths inside it are always relative; writes are
atomic. `aggregate` groups records by everything but the seed and reports mean ± std (ddof = 1), a 95%
Student-t interval, paired gaps and the paper-compatible gap of means (§7). Reports read records and
never recompute.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import read_json, sha256_json, write_json_atomic
from ..cache import model_sha256
from ..errors import ConfigError, MissingDependencyError
from .metrics import AVG_GAP_BASE, MIA_FLAVOURS, MetricInfo

__all__ = [
    "SCHEMA_VERSION",
    "aggregate",
    "build_record",
    "read_record",
    "records_to_frame",
    "run_id",
    "t_interval",
    "write_record",
]

SCHEMA_VERSION = "1.0"
_ABS_PATH = re.compile(r"^(/|[A-Za-z]:[\\/]|\\\\|~[/\\])")


def run_id(
    dataset: str,
    split_spec: str,
    split_sha256: str,
    model: Any,
    method: str | None,
    config: dict[str, Any] | None,
    seed: int,
) -> str:
    """SHA-256 of (dataset, split spec and digest, model, method config, seed): identifies a run for resuming."""
    return sha256_json(
        {
            "dataset": dataset,
            "split": split_spec,
            "split_sha256": split_sha256,
            "model": model,
            "method": method,
            "config": config or {},
            "seed": seed,
        }
    )


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None, arrays to lists."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, np.ndarray):
        return _clean(v.tolist())
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else None
    return v


def _git_sha() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def environment(device: Any) -> dict[str, Any]:
    import sklearn

    dev = str(device)
    name = (
        torch.cuda.get_device_name(device)
        if getattr(device, "type", "") == "cuda"
        else platform.processor() or platform.machine()
    )
    return {
        "device": dev,
        "device_name": name,
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "num_threads": torch.get_num_threads(),
        "deterministic": bool(torch.are_deterministic_algorithms_enabled()),
    }


def build_record(
    *,
    models: dict[str, Any],
    singles: dict[str, Any],
    result: Any,
    gaps: dict[str, Any],
    bundle: Any,
    split: Any,
    device: Any,
    runtime_seconds: float | None,
    runtime_setup_seconds: float | None,
    runtime_update_seconds: float | None,
    retrain_seconds: float | None,
    noise_floor: float | None,
    method: str | None,
    config: dict[str, Any] | None,
    seed: int,
    mia_flavour: str,
    reproduce: bool,
    streamed: list[str],
    audits: list[str],
    timing: dict[str, Any],
    infos: Mapping[str, MetricInfo],
    model_name: str | None = None,
    audits_skipped: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Assemble the §8.2 record from a suite result (used by `evaluate`); ``infos`` gives ``metric_meta``."""
    from .. import __version__
    from ..models import model_config

    info = bundle.info
    u = models["unlearned"]
    cfg = model_config(u) or {}
    arch = model_name or cfg.get("name") or type(u).__name__
    model_section = {
        "arch": arch,
        "num_params": int(sum(p.numel() for p in u.parameters())),
        "config": {k: v for k, v in cfg.items() if k not in ("mean", "std")} or None,
    }
    if "original" in models:
        model_section["original_sha256"] = model_sha256(models["original"])
    sizes = {"train": int(split.num_train), "test": len(split.test)}
    kind = (getattr(bundle, "manipulation", None) or {}).get("scenario") or split.kind
    rec_models: dict[str, Any] = {}
    for role, m in {**models, **singles}.items():
        entry: dict[str, Any] = {"sha256": model_sha256(m), "metrics": result.metrics.get(role, {})}
        if result.diagnostics.get(role):
            entry["diagnostics"] = result.diagnostics[role]
        rec_models[role] = entry
    un = rec_models["unlearned"]
    if runtime_seconds is not None:
        upd = runtime_update_seconds
        if upd is None and runtime_setup_seconds is not None:
            upd = float(runtime_seconds) - float(runtime_setup_seconds)
        for key, secs in (
            ("runtime_seconds", runtime_seconds),
            ("runtime_setup_seconds", runtime_setup_seconds),
            ("runtime_update_seconds", upd),
        ):
            if secs is not None:
                un[key] = un["metrics"][key] = float(secs)
        if retrain_seconds is not None and runtime_seconds > 0:
            un["speedup_vs_retrained"] = float(retrain_seconds) / float(runtime_seconds)
            un["metrics"]["speedup_vs_retrained"] = un["speedup_vs_retrained"]
    if retrain_seconds is not None and "retrained" in rec_models:
        rec_models["retrained"]["runtime_seconds"] = float(retrain_seconds)
        rec_models["retrained"]["metrics"]["runtime_seconds"] = float(retrain_seconds)
    present = set(gaps) | {k for e in rec_models.values() for k in e["metrics"]}
    if noise_floor is not None:
        present.add("noise_floor_avg_gap")
    meta = {
        k: {"unit": info.unit, "higher_is_better": info.higher_is_better} for k, info in infos.items() if k in present
    }
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id(info.name, split.spec, split.sha256, model_section["config"] or arch, method, config, seed),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "package": {"name": "unlearnkit", "version": __version__, "git_sha": _git_sha()},
        "environment": environment(device),
        "task": {
            "kind": "classification",
            "scenario": kind,
            "dataset": info.name,
            "num_classes": int(info.num_classes),
            "image_size": int(info.image_size),
            "split": {"protocol": "library", "split_seed": int(split.seed), "sizes": sizes},
            "forget": {
                "spec": split.spec,
                "size": len(split.forget),
                "indices_sha256": split.sha256,
                "classes": list(split.forget_classes) or None,
            },
            "test_set_for_accuracy_test": "test_without_forgotten_classes" if split.is_classwise else "test",
            "manipulation": getattr(bundle, "manipulation", None) or None,
        },
        "model": model_section,
        "method": {"name": method, "config": config or {}},
        "evaluation_config": {
            "mia_flavour": mia_flavour,
            "reproduce_bugs": bool(reproduce),
            "kl": {"direction": "retrained||model", "sets": ["forget"]},
            "metrics": list(streamed),
            "audits": list(audits),
            "audits_skipped": dict(audits_skipped or {}),
        },
        "seed": int(seed),
        "models": rec_models,
        "gaps_to_retrained": gaps,
        "noise_floor_avg_gap": noise_floor,
        "metric_meta": meta,
        "extras": result.extras,
        "evaluation_timing": timing,
    }
    return _clean(record)


# ------------------------------------------------------------------------------------------ file I/O
def _check_relative(obj: Any, where: str = "record") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            _check_relative(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _check_relative(v, f"{where}[{i}]")
    elif isinstance(obj, str) and _ABS_PATH.match(obj):
        raise ConfigError(
            f"{where} holds an absolute path ({obj!r}); records may only reference files by a path "
            "relative to the record"
        )


def write_record(record: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a record as JSON atomically; refuses absolute paths anywhere inside it."""
    if not isinstance(record, dict) or "schema_version" not in record:
        raise ConfigError("not an evaluation record (no schema_version); build it with unlearnkit.evaluate()")
    rec = _clean(record)
    _check_relative(rec)
    return write_json_atomic(path, rec)


def read_record(path: str | os.PathLike) -> dict[str, Any]:
    """Read a record written by `write_record` (checks the schema's major version)."""
    try:
        rec = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read record {path}: {exc}") from exc
    ver = str(rec.get("schema_version", "")) if isinstance(rec, dict) else ""
    if ver.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise ConfigError(
            f"record {path} has schema_version {ver or 'none'!r}; this unlearnkit reads "
            f"{SCHEMA_VERSION.split('.')[0]}.x"
        )
    return rec


# --------------------------------------------------------------------------------------- aggregation
def t_interval(values: Iterable[float | None], level: float = 0.95) -> dict[str, Any]:
    """mean, sample std (ddof = 1), n and the Student-t interval ``mean ± t_{(1+level)/2, n−1} s/√n``."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    n = len(v)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = float(v.mean())
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = float(v.std(ddof=1))
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "ci95": [mean - half, mean + half], "n": n}


def _group_key(rec: dict[str, Any]) -> dict[str, Any]:
    task = rec.get("task", {})
    return {
        "dataset": task.get("dataset"),
        "scenario": task.get("scenario"),
        "forget_spec": task.get("forget", {}).get("spec"),
        "model": rec.get("model", {}).get("arch"),
        "model_config": rec.get("model", {}).get("config"),
        "method": rec.get("method", {}).get("name"),
        "method_config": rec.get("method", {}).get("config"),
        "mia_flavour": rec.get("evaluation_config", {}).get("mia_flavour"),
    }


def aggregate(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Aggregate records over seeds: one entry per group (everything but the seed).

    Each entry: ``group``, ``n_seeds``, ``seeds``, ``metrics`` (unlearned model: key → mean/std/ci95/n),
    ``reference_metrics`` (original / retrained, same form), ``gaps_paired`` (per-seed gaps, key → stats),
    ``avg_gap_paired`` (stats of per-seed Avg. Gap; the primary number), ``avg_gap_of_means`` (|mean_u −
    mean_r| averaged over the four Avg-Gap metrics; paper-compatible) and ``noise_floor_avg_gap`` stats.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    keys: dict[str, dict[str, Any]] = {}
    for rec in records:
        g = _group_key(rec)
        k = sha256_json(g)
        groups.setdefault(k, []).append(rec)
        keys[k] = g
    out = []
    for k, recs in groups.items():
        recs = sorted(recs, key=lambda r: r.get("seed", 0))
        seeds = [r.get("seed") for r in recs]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"group {keys[k]} has duplicate seeds {seeds}; aggregate one record per seed")

        def stats_for(role: str, recs: list[dict[str, Any]] = recs) -> dict[str, Any]:
            names: list[str] = []
            for r in recs:
                for n, v in r.get("models", {}).get(role, {}).get("metrics", {}).items():
                    if n not in names and (v is None or isinstance(v, (int, float))) and not isinstance(v, bool):
                        names.append(n)
            return {
                n: t_interval(
                    [
                        r["models"][role]["metrics"].get(n)
                        for r in recs
                        if role in r.get("models", {}) and r["models"][role]["metrics"].get(n) is not None
                    ]
                )
                for n in names
            }

        entry: dict[str, Any] = {
            "group": keys[k],
            "n_seeds": len(recs),
            "seeds": seeds,
            "metrics": stats_for("unlearned"),
            "reference_metrics": {
                role: stats_for(role)
                for role in ("original", "retrained")
                if any(role in r.get("models", {}) for r in recs)
            },
        }
        gap_names: list[str] = []
        for r in recs:
            for n in r.get("gaps_to_retrained", {}):
                if n not in gap_names:
                    gap_names.append(n)
        entry["gaps_paired"] = {
            n: t_interval(
                [r["gaps_to_retrained"].get(n) for r in recs if r.get("gaps_to_retrained", {}).get(n) is not None]
            )
            for n in gap_names
            if n != "avg_gap_to_retrained"
        }
        entry["avg_gap_paired"] = t_interval(
            [
                r.get("gaps_to_retrained", {}).get("avg_gap_to_retrained")
                for r in recs
                if r.get("gaps_to_retrained", {}).get("avg_gap_to_retrained") is not None
            ]
        )
        flavour = keys[k].get("mia_flavour") or "svc_confidence"
        four = (*AVG_GAP_BASE, MIA_FLAVOURS.get(flavour, "mia_efficacy_forget"))
        ref = entry["reference_metrics"].get("retrained", {})
        um = entry["metrics"]
        if all(um.get(n, {}).get("mean") is not None and ref.get(n, {}).get("mean") is not None for n in four):
            val = float(np.mean([abs(um[n]["mean"] - ref[n]["mean"]) for n in four]))
            entry["avg_gap_of_means"] = {"value": val, "note": "paper-compatible (gap of seed-averaged metrics)"}
        else:
            entry["avg_gap_of_means"] = {"value": None, "note": "paper-compatible (gap of seed-averaged metrics)"}
        entry["noise_floor_avg_gap"] = t_interval(
            [r.get("noise_floor_avg_gap") for r in recs if r.get("noise_floor_avg_gap") is not None]
        )
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------- pandas
def flatten_record(record: dict[str, Any], sep: str = ".") -> dict[str, Any]:
    """One flat row: nested keys joined with ``sep``; lists kept as JSON strings; large extras dropped."""
    row: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{prefix}{sep}{k}" if prefix else str(k))
        elif isinstance(obj, list):
            row[prefix] = json.dumps(obj) if len(obj) <= 64 else f"<list of {len(obj)}>"
        else:
            row[prefix] = obj

    walk({k: v for k, v in record.items() if k not in ("metric_meta",)}, "")
    return row


def records_to_frame(records: Iterable[dict[str, Any]]) -> Any:
    """A pandas DataFrame with one row per record (needs the optional ``pandas`` extra)."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("records_to_frame needs pandas: pip install 'unlearnkit[report]'") from exc
    return pd.DataFrame([flatten_record(r) for r in records])
