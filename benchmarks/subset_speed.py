"""Is training on a subset of a dataset as fast as on the whole tensor dataset? (issue 23 item 7)

Trains ``small_cnn`` on Fashion-MNIST for ``--epochs`` with the default recipe, once on the full training set and
once on the set without one image (``bundle.train.subset(keep)``, as a retrain without the image does),
alternating the order over ``--repeats`` rounds in one process, and prints the best time of each and their ratio.

    python benchmarks/subset_speed.py [--epochs 1] [--repeats 2]

Run it alone: with another CPU-heavy process on a 2-core machine, OpenMP's default spin-waiting makes every
timing erratic (set ``OMP_WAIT_POLICY=PASSIVE`` there), which is what once made a subset look 13x slower.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace

import torch

from unlearnkit.data import load_dataset
from unlearnkit.models import model_for_dataset
from unlearnkit.training import default_recipe, train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)
    bundle = load_dataset("fashion_mnist")
    info = bundle.info
    recipe = replace(default_recipe(info.name, "small_cnn"), epochs=args.epochs)
    n = len(bundle.train)
    sets = {"full": bundle.train, "subset": bundle.train.subset([i for i in range(n) if i != n // 2])}
    times: dict[str, list[float]] = {"full": [], "subset": []}
    for rep in range(args.repeats):
        for name in ("full", "subset") if rep % 2 == 0 else ("subset", "full"):
            torch.manual_seed(0)
            net = model_for_dataset("small_cnn", info)
            t0 = time.perf_counter()
            train(net, sets[name], recipe, seed=0, augment=info.augment, device="cpu", progress=False)
            times[name].append(time.perf_counter() - t0)
            print(f"round {rep + 1} {name:6s} {times[name][-1]:.2f} s", flush=True)
    full, sub = min(times["full"]), min(times["subset"])
    print(
        f"best of {args.repeats}: full {full:.2f} s, subset {sub:.2f} s, subset/full {sub / full:.2f} "
        f"({args.epochs} epoch(s), {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
        f"{os.environ.get('OMP_WAIT_POLICY', 'default')}, load {os.getloadavg()[0]:.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
