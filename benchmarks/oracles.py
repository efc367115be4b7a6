"""Train (or fetch from the cache) the originals and retrained oracles for Fashion-MNIST and report the
memorisation gap of the default recipe beside the seed noise between two retrained models.

    python benchmarks/oracles.py [--dataset fashion_mnist] [--model small_cnn] [--seeds 0 1 2] [--out FILE.md]

Memorisation gap (random:0.1) = original's forget accuracy − retrained model's forget accuracy, per seed.
Seed noise = |forget/test accuracy difference| between the retrained model of seed s and one of seed s+1000 on
the same split, and their avg gap over FA/RA/TA/MIA-efficacy (evaluation §7).
"""

from __future__ import annotations

import argparse
import statistics
import time

from unlearnkit.data import load_dataset, split_for
from unlearnkit.oracle import train_or_load
from unlearnkit.pipeline import NOISE_FLOOR_SEED_OFFSET
from unlearnkit.training import accuracy, default_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--specs", nargs="+", default=["random:0.1", "class:0"])
    ap.add_argument("--noise-seeds", type=int, nargs="+", default=[0], help="seeds that also get a second retrain")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default=None, help="write the markdown table here")
    args = ap.parse_args()

    from unlearnkit.evaluation import evaluate

    bundle = load_dataset(args.dataset, args.data_dir)
    recipe = default_recipe(bundle.info.name, args.model)
    rows, t_start = [], time.perf_counter()
    for seed in args.seeds:
        orig = train_or_load(bundle, args.model, None, seed=seed, device=args.device)
        for spec in args.specs:
            split = split_for(bundle, spec, seed)
            ret = train_or_load(bundle, args.model, split, seed=seed, device=args.device)
            forget = bundle.train.subset(split.forget)
            row = {
                "seed": seed,
                "spec": spec,
                "original_train": orig.meta["accuracy_train"],
                "original_test": orig.meta["accuracy_test"],
                "original_forget": accuracy(orig.model, forget),
                "retrained_forget": accuracy(ret.model, forget),
                "retrained_test": ret.meta["accuracy_test"],
                "train_seconds": ret.meta["wall_seconds"],
                "noise_avg_gap": None,
            }
            if seed in args.noise_seeds:
                twin = train_or_load(bundle, args.model, split, seed=seed + NOISE_FLOOR_SEED_OFFSET, device=args.device)
                rec = evaluate(twin.model, bundle, split, retrained=ret.model, device=args.device)
                row["noise_avg_gap"] = rec["gaps_to_retrained"]["avg_gap_to_retrained"]
                row["noise_forget"] = abs(accuracy(twin.model, forget) - row["retrained_forget"])
            rows.append(row)
            print(row, flush=True)

    lines = [
        f"Recipe `{args.dataset}` × `{args.model}`: {recipe}",
        "",
        "| spec | seed | original train acc | original test acc | original FA | retrained FA "
        "| memorisation gap (pp) | retrained TA | seed-noise avg gap (pp) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        noise = "–" if r["noise_avg_gap"] is None else f"{r['noise_avg_gap']:.2f}"
        lines.append(
            f"| {r['spec']} | {r['seed']} | {r['original_train']:.2f} | {r['original_test']:.2f} | "
            f"{r['original_forget']:.2f} | {r['retrained_forget']:.2f} | "
            f"{r['original_forget'] - r['retrained_forget']:.2f} | {r['retrained_test']:.2f} | {noise} |"
        )
    for spec in args.specs:
        gaps = [r["original_forget"] - r["retrained_forget"] for r in rows if r["spec"] == spec]
        if len(gaps) > 1:
            lines.append(
                f"\n{spec}: memorisation gap {statistics.mean(gaps):.2f} ± {statistics.stdev(gaps):.2f} pp "
                f"over seeds {args.seeds}"
            )
    lines.append(f"\nwall time of this command: {time.perf_counter() - t_start:.0f} s (cached models cost ~0 s)")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from unlearnkit._io import write_text_atomic

        write_text_atomic(args.out, text + "\n")


if __name__ == "__main__":
    main()
