"""Weight filtering (WF-Net) benchmark: forget every class in turn from one set of trained filters.

For each model: train (or load) the original, train the per-class filters once (cached), then for every
class ``c`` (and a few multi-class sets) fold the filter into a plain model and measure FA (accuracy on the
forgotten classes: test images and training images) and RA (test accuracy on the other classes). The one-off
cost of the filters is set against the cost of retraining once per class.

Retrain cost (``--retrain``):

* ``estimate`` (default): retrain for ``class:0`` only and multiply its time by ``K``; the output says so;
* ``all``: retrain for every class (and every set) and add the retrained models' FA / RA to the table
  (~25 minutes for small_cnn on Fashion-MNIST on 2 CPU cores);
* ``none``: no retraining.

Usage::

    python benchmarks/weight_filtering.py --models small_cnn vit_tiny --dataset fashion_mnist
    python benchmarks/weight_filtering.py --models small_cnn --retrain estimate --maps

Writes markdown to ``benchmarks/weight_filtering.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from unlearnkit._io import write_text_atomic
from unlearnkit.bench.filter_analysis import class_similarity, evaluate_all_classes, rows_to_markdown, save_filter_maps
from unlearnkit.data import load_dataset, split_for
from unlearnkit.device import resolve_device
from unlearnkit.filters import fold_filters, get_or_train_filters
from unlearnkit.methods import create_method, preset_config
from unlearnkit.oracle import train_or_load

HERE = Path(__file__).resolve().parent


def parse_sets(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in part.split(",")) for part in text.split(";") if part.strip()]


def parse_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        key, sep, value = it.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {it!r}")
        out[key.strip()] = value.strip()
    return out


def run_model(args: argparse.Namespace, bundle, model_name: str, dev: torch.device, mode: str) -> str:
    info = bundle.info
    k = info.num_classes
    sets = parse_sets(args.sets)
    lines = [f"## {info.name} / {model_name} (seed {args.seed})", ""]

    original = train_or_load(bundle, model_name, None, seed=args.seed, device=dev, progress=args.progress)
    model = original.model.eval()
    method = create_method(
        "weight_filtering", dataset=info.name, model=model_name, kind="class", **parse_overrides(args.set)
    )
    _, source = preset_config("weight_filtering", info.name, model_name, "class")
    fcfg = method.config.filter_config()
    t0 = time.perf_counter()
    filters, hit = get_or_train_filters(
        model, bundle.train, k, fcfg, seed=args.seed, device=dev, progress=args.progress
    )
    filter_seconds = float(filters.meta.get("wall_seconds", time.perf_counter() - t0))

    t0 = time.perf_counter()
    for c in range(k):
        fold_filters(model, filters, [c], combine=method.config.combine)
    fold_ms = 1000 * (time.perf_counter() - t0) / k

    retrained: dict[tuple[int, ...], torch.nn.Module] = {}
    retrain_times: dict[tuple[int, ...], float] = {}
    if mode != "none":
        requests = [(0,)] if mode == "estimate" else [(c,) for c in range(k)] + sets
        for req in requests:
            spec = "class:" + ",".join(str(c) for c in req)
            rt = train_or_load(
                bundle,
                model_name,
                split_for(bundle, spec, args.seed),
                seed=args.seed,
                device=dev,
                progress=args.progress,
            )
            retrained[req] = rt.model.eval()
            retrain_times[req] = float(rt.meta["wall_seconds"])

    rows = evaluate_all_classes(
        model,
        filters,
        bundle.train,
        bundle.test,
        sets=sets,
        combine=method.config.combine,
        retrained=retrained,
        device=dev,
    )

    # ---- cost
    lines += ["### Cost", "", "| item | seconds | note |", "|---|---|---|"]
    lines.append(
        f"| original training | {original.meta['wall_seconds']:.1f} | {original.meta['device']}"
        f"{', from cache (stored time)' if original.from_cache else ''} |"
    )
    lines.append(
        f"| filter training (once, all {k} classes) | {filter_seconds:.1f} | {filters.meta.get('steps')} "
        f"steps, {filters.num_parameters():,} filter parameters on {len(filters.sites)} layers"
        f"{', from cache (stored time)' if hit else ''} |"
    )
    lines.append(f"| one unlearning request (fold) | {fold_ms / 1000:.4f} | mean over the {k} classes |")
    if mode == "estimate" and retrain_times:
        one = retrain_times[(0,)]
        lines.append(f"| retrain, class 0 only | {one:.1f} | measured |")
        lines.append(f"| {k} retrains (one per class) | {k * one:.1f} | **estimated** as {k} × the class-0 retrain |")
    elif mode == "all":
        per_class = [retrain_times[(c,)] for c in range(k)]
        lines.append(
            f"| {k} retrains (one per class) | {sum(per_class):.1f} | measured, each "
            f"{min(per_class):.1f}–{max(per_class):.1f} |"
        )
    if retrain_times:
        ten = (k * retrain_times[(0,)]) if mode == "estimate" else sum(retrain_times[(c,)] for c in range(k))
        lines += [
            "",
            f"Filters cost {filter_seconds / ten:.2f}× the {k} retrains "
            f"({'estimated' if mode == 'estimate' else 'measured'}); every further request is a "
            "fold of a few milliseconds.",
        ]
    lines += ["", f"Config ({source}): " + ", ".join(f"{key}={val}" for key, val in fcfg.training_dict().items()), ""]

    # ---- table
    names = list(info.class_names) if info.class_names else None
    lines += [
        "### All classes",
        "",
        "FA = accuracy (%) on the forgotten classes (test images; train = the forget set), RA = test accuracy "
        "on the other classes; `orig` = the original model"
        + (", `RT` = retrained without the classes" if retrained else "")
        + (" (class 0 only: the other retrains were estimated, not run)" if mode == "estimate" else "")
        + ".",
        "",
        rows_to_markdown(rows, names),
    ]
    single = [r for r in rows if len(r["classes"]) == 1]
    lines.append(
        f"Mean over the {k} single classes: FA test {np.mean([r['fa_test'] for r in single]):.2f}, "
        f"FA train {np.mean([r['fa_train'] for r in single]):.2f}, RA test "
        f"{np.mean([r['ra_test'] for r in single]):.2f} (original RA "
        f"{np.mean([r['orig_ra_test'] for r in single]):.2f}); worst RA drop "
        f"{max(r['orig_ra_test'] - r['ra_test'] for r in single):.2f} points."
    )
    lines.append("")

    # ---- explainability
    sim = class_similarity(filters)
    pairs = sorted(((sim[i, j], i, j) for i in range(k) for j in range(i + 1, k)), reverse=True)[:5]

    def nm(c: int) -> str:
        return f"{c} {names[c]}" if names and names[c] != str(c) else str(c)

    lines += [
        "### Class similarity (cosine of 1 − α)",
        "",
        "Most similar pairs: " + "; ".join(f"{nm(i)} ~ {nm(j)} ({s:.2f})" for s, i, j in pairs),
        "",
    ]
    if args.maps:
        stem = Path(args.out).parent / f"weight_filtering_{info.name}_{model_name}_maps"
        out = save_filter_maps(filters, stem.with_suffix(".npz"), stem.with_suffix(".png"), names)
        lines += ["Filter maps: " + ", ".join(f"`{p.name}`" for p in out.values()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--models", nargs="+", default=["small_cnn", "vit_tiny"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--retrain",
        choices=["estimate", "all", "none"],
        default="estimate",
        help="estimate: retrain class 0 only and multiply by K (default); all: retrain every class",
    )
    p.add_argument(
        "--retrain-for",
        action="append",
        default=[],
        metavar="MODEL=MODE",
        help="retrain mode for one model, e.g. small_cnn=all (repeatable; others use --retrain)",
    )
    p.add_argument(
        "--sets",
        default="0,6;5,7,9;0,2,4,6",
        help="multi-class requests, ';'-separated (default: similar upper-body and shoe classes)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a filter config value")
    p.add_argument("--device", default="auto")
    p.add_argument("--maps", action="store_true", help="also save filter maps (.npz, .png) beside the markdown")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--out", default=str(HERE / "weight_filtering.md"))
    args = p.parse_args(argv)

    overrides = parse_overrides(args.retrain_for)
    modes = {name: overrides.get(name, args.retrain) for name in args.models}
    for name, mode in modes.items():  # checked before any training
        if mode not in ("estimate", "all", "none"):
            raise SystemExit(f"--retrain-for {name}={mode}: use estimate, all or none")
    dev = resolve_device(args.device)
    bundle = load_dataset(args.dataset)
    t0 = time.perf_counter()
    parts = [
        "# Weight filtering (WF-Net): every class forgotten from one set of filters",
        "",
        f"Command: `python benchmarks/weight_filtering.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Device: {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}",
        "",
    ]
    if "estimate" in modes.values():
        parts += [
            "**Retrain cost is estimated** from one retrain (class 0) × number of classes; run with "
            "`--retrain all` to measure all of them and compare against every retrained model.",
            "",
        ]
    for name in args.models:
        parts.append(run_model(args, bundle, name, dev, modes[name]))
        print(parts[-1], flush=True)
    parts.append(f"Total benchmark wall time: {time.perf_counter() - t0:.0f} s.")
    out = write_text_atomic(args.out, "\n".join(parts) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
