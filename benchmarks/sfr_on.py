"""Benchmark SFR-on against SalUn, NegGrad+, FT and Retrain on Fashion-MNIST.

Grid: models ``small_cnn`` and ``resnet18`` (width 16) × forgetting ``class:0`` and ``random:0.1`` × seeds.
For each cell it loads (or trains once, into the oracle cache) the original and the retrained model with
`unlearnkit.oracle.train_or_load`, runs every method from the original with its preset for
(fashion_mnist, model, kind), and writes a markdown table of mean ± std over seeds of

* FA, RA, TA (percent; class-wise TA excludes the forgotten class's test images),
* MIA (MIA-efficacy: SVC on the true-label confidence, evaluation.md §1.4),
* Avg gap (mean |Δ| of FA, RA, TA, MIA to the same-seed retrained model, §1.5),
* KL (mean over the forget set of KL(p_retrained ‖ p_unlearned), nats, §1.6),
* time (seconds of `method.unlearn`, preprocessing included; Retrain: the oracle's training time).

Each finished run is appended to a JSONL file beside the table, and a re-run skips the runs already there.
SFR-on runs with ``fisher_cache=False`` so its time includes the Fisher passes (evaluation.md §1.7).

Usage::

    python benchmarks/sfr_on.py --quick                  # seed 0, small_cnn only (CPU: tens of minutes)
    python benchmarks/sfr_on.py --seeds 0 1 2 --out results/sfr_on.md
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearnkit import oracle
from unlearnkit._io import sha256_json
from unlearnkit.data.datasets import load_dataset
from unlearnkit.data.splits import split_for
from unlearnkit.device import resolve_device
from unlearnkit.methods import METHODS, RunContext, UnlearnData, create_method, frozen_copy
from unlearnkit.training import predict_logits

MODELS = {"small_cnn": {}, "resnet18": {"width": 16}}
SPLITS = ("class:0", "random:0.1")
METHOD_NAMES = ("sfr_on", "salun", "neggrad_plus", "ft", "retrain")
METRICS = ("FA", "RA", "TA", "MIA", "gap", "KL", "time")
HEADERS = {"FA": "FA", "RA": "RA", "TA": "TA", "MIA": "MIA", "gap": "Avg gap", "KL": "KL to RT", "time": "time (s)"}
# Per-method overrides on top of the presets: time SFR-on's Fisher passes instead of reading them from the cache.
OVERRIDES: dict[str, dict[str, Any]] = {"sfr_on": {"fisher_cache": False}}


# ------------------------------------------------------------------------------------------------ metrics
def _probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


def _acc(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).double().mean() * 100) if len(labels) else math.nan


def mia_efficacy(lf, yf, lr, yr, lt, yt, max_shadow: int | None = None) -> float:
    """SVC(C=3, rbf, gamma='auto') on p_y: members = first |test| retain samples, non-members = test;
    returns the percentage of forget samples predicted non-member (evaluation.md §1.4)."""
    from sklearn.svm import SVC

    n = len(yt) if max_shadow is None else min(len(yt), max_shadow)
    conf = lambda lg, y: _probs(lg)[np.arange(len(y)), y.numpy()].astype(np.float32)[:, None]  # noqa: E731
    x = np.concatenate([conf(lr[:n], yr[:n]), conf(lt[:n], yt[:n])])
    t = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x, t)
    return float((clf.predict(conf(lf, yf)) == 0).mean() * 100)


def kl_to_reference(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    p, q = _probs(ref_logits), _probs(logits)
    return float((p * (np.log(p + 1e-20) - np.log(q + 1e-20))).sum(1).mean())


def evaluate_model(model, sets, device, max_shadow=None) -> tuple[dict[str, float], torch.Tensor]:
    """FA, RA, TA and MIA of ``model``; also returns the forget logits (for KL)."""
    out = {k: predict_logits(model, ds, device=device) for k, ds in sets.items()}
    (lf, yf), (lr, yr), (lt, yt) = out["forget"], out["retain"], out["test"]
    m = {"FA": _acc(lf, yf), "RA": _acc(lr, yr), "TA": _acc(lt, yt),
         "MIA": mia_efficacy(lf, yf, lr, yr, lt, yt, max_shadow)}
    return m, lf


# ------------------------------------------------------------------------------------------------ runs
def _key(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["model"], r["split"], r["seed"], r["method"], sha256_json(r["config"]))


def run_cell(bundle, model_name: str, spec: str, seed: int, methods: list[str], done: set[tuple], log: Path,
             device, max_shadow: int | None, sfr_overrides: dict[str, Any]) -> list[tuple]:
    """Run (or find in ``done``) every method of one (model, split, seed) cell; returns the cell's run keys."""
    kw = MODELS[model_name]
    dataset = bundle.info.name
    split = split_for(bundle, spec, seed)
    kind = "class" if split.is_classwise else "random"
    test_idx = np.arange(len(bundle.test))
    if split.is_classwise:  # TA and the MIA's non-members: test images of the remaining classes
        keep = ~np.isin(bundle.test.targets.numpy(), list(split.forget_classes))
        test_idx = test_idx[keep]
    sets = {"forget": bundle.train.subset(split.forget), "retain": bundle.train.subset(split.retain),
            "test": bundle.test.subset(test_idx)}
    original = oracle.train_or_load(bundle, model_name, None, seed=seed, model_kwargs=kw, device=device).model
    rt = oracle.train_or_load(bundle, model_name, split, seed=seed, model_kwargs=kw, device=device)
    rt_metrics, rt_logits = evaluate_model(rt.model, sets, device, max_shadow)
    data = UnlearnData(forget=sets["forget"], retain=sets["retain"], test=sets["test"], split=split,
                       augment=bundle.info.augment, num_classes=bundle.info.num_classes)
    keys = []
    for name in ["original", *methods]:
        method = None
        if name not in ("original", "retrain"):
            if name not in METHODS:
                print(f"skip {name}: not registered", file=sys.stderr)
                continue
            overrides = {**OVERRIDES.get(name, {}), **(sfr_overrides if name == "sfr_on" else {})}
            method = create_method(name, dataset=dataset, model=model_name, kind=kind, **overrides)
        config: dict[str, Any] = method.config.to_dict() if method is not None else {}
        key = (dataset, model_name, spec, seed, name, sha256_json(config))
        keys.append(key)
        if key in done:
            continue
        if name == "original":
            model, seconds, metrics, logits = original, 0.0, *evaluate_model(original, sets, device, max_shadow)
        elif name == "retrain":  # the cached oracle is the retrained model; its time is the training time
            seconds = float(rt.meta.get("wall_seconds", math.nan))
            model, metrics, logits = rt.model, dict(rt_metrics), rt_logits
        else:
            assert method is not None
            work = copy.deepcopy(original)
            ctx = RunContext(device, seed, original=frozen_copy(original))
            torch.manual_seed(seed)
            _sync(device)
            t0 = time.perf_counter()
            try:
                model = method.unlearn(work, data, ctx)
            except Exception as exc:  # noqa: BLE001 - a failed method is a table entry, not a crashed benchmark
                print(f"{name} failed on {model_name} {spec} seed {seed}: {exc}", file=sys.stderr)
                continue
            _sync(device)
            seconds = time.perf_counter() - t0
            metrics, logits = evaluate_model(model, sets, device, max_shadow)
        metrics["gap"] = sum(abs(metrics[k] - rt_metrics[k]) for k in ("FA", "RA", "TA", "MIA")) / 4
        metrics["KL"] = kl_to_reference(rt_logits, logits)
        metrics["time"] = seconds
        rec = {"dataset": dataset, "model": model_name, "split": spec, "seed": seed, "method": name,
               "metrics": metrics, "config": config}
        with log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
        done.add(key)
        print(f"{model_name} {spec} seed {seed} {name}: " +
              " ".join(f"{k}={v:.2f}" for k, v in metrics.items()), flush=True)
    return keys


def _sync(device) -> None:
    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------------------------ table
def _fmt(values: list[float]) -> str:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return "–"
    mean = statistics.fmean(vals)
    return f"{mean:.2f}" if len(vals) == 1 else f"{mean:.2f} ± {statistics.stdev(vals):.2f}"


def render(records: list[dict[str, Any]], order: list[str], dataset: str) -> str:
    lines = [f"# SFR-on benchmark: {dataset}", "",
             "Mean ± std over seeds. FA/RA/TA/MIA in %, MIA = MIA-efficacy (SVC on confidence); Avg gap = mean "
             "|Δ| of FA, RA, TA, MIA to the same-seed retrained model; KL = KL(retrained ‖ method) on the forget "
             "set (nats); time = seconds of unlearning (Retrain: training time of the cached oracle).", ""]
    cells = sorted({(r["model"], r["split"]) for r in records}, key=lambda c: (list(MODELS).index(c[0]), c[1]))
    for model_name, spec in cells:
        rows = [r for r in records if r["model"] == model_name and r["split"] == spec]
        seeds = sorted({r["seed"] for r in rows})
        lines += [f"## {model_name}{' (width 16)' if MODELS[model_name] else ''}, {spec}, seeds {seeds}", "",
                  "| method | " + " | ".join(HEADERS[m] for m in METRICS) + " |",
                  "|---|" + "---|" * len(METRICS)]
        for name in ["original", *order]:
            mine = [r for r in rows if r["method"] == name]
            if mine:
                lines.append(f"| {name} | " + " | ".join(_fmt([r["metrics"][m] for r in mine]) for m in METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="seed 0 and small_cnn only; MIA shadow sets capped at 2,000")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=list(METHOD_NAMES))
    p.add_argument("--sfr-set", nargs="*", default=[], metavar="KEY=VALUE", help="extra sfr_on options")
    p.add_argument("--mia-max", type=int, default=None, help="cap the MIA shadow sets (default: full test set)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dataset", default="fashion_mnist", help="fashion_mnist (default); digits for a smoke test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/sfr_on.md"))
    a = p.parse_args(argv)
    if a.quick:
        a.seeds, a.models = a.seeds[:1], ["small_cnn"]
        a.mia_max = a.mia_max or 2000
    if a.threads:
        torch.set_num_threads(a.threads)
    sfr_overrides = dict(kv.split("=", 1) for kv in a.sfr_set)
    device = resolve_device(a.device)
    bundle = load_dataset(a.dataset, a.data_dir)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    log = a.out.with_suffix(".jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
    done = {_key(r) for r in records}
    current: set[tuple] = set()
    for model_name in a.models:
        for spec in a.splits:
            for seed in a.seeds:
                current |= set(run_cell(bundle, model_name, spec, seed, a.methods, done, log, device, a.mia_max, sfr_overrides))
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    wanted = [r for r in records if _key(r) in current]
    a.out.write_text(render(wanted, a.methods, a.dataset) + "\n", encoding="utf-8")
    print(f"wrote {a.out} ({len(wanted)} runs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
