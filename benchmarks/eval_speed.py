"""Time the default evaluation suite for one small_cnn model on Fashion-MNIST (60k train / 10k test).

Prints total time and the share of forward passes vs attack fitting (SVC, logistic regression).
The default forget spec ``random:0.1`` is the worst case for the SVC attack: its shadow sets are the
first 10,000 retain samples vs the 10,000 test images, and it predicts 6,000 forget samples.

Usage:
    OMP_NUM_THREADS=2 python benchmarks/eval_speed.py [--forget random:0.1] [--threads 2] [--train-epochs 0]
        [--with-retrained] [--cached] [--data-dir DIR]

An untrained model is fine for timing (``--train-epochs 0``); with ``--train-epochs N`` the model is first
trained for N epochs (not timed), which gives saturated confidences like a real model's.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--forget", default="random:0.1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--train-epochs", type=int, default=0)
    ap.add_argument("--with-retrained", action="store_true", help="also evaluate a second model as the retrained one")
    ap.add_argument(
        "--cached",
        action="store_true",
        help="use the cached (trained) original and retrained oracle of seed 0 (trained if missing, "
        "not timed) instead of a fresh model",
    )
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from unlearnkit.data import load_dataset, split_for
    from unlearnkit.evaluation import evaluate
    from unlearnkit.models import model_for_dataset
    from unlearnkit.training import default_recipe, train

    bundle = load_dataset("fashion_mnist", args.data_dir)
    split = split_for(bundle, args.forget, 0)
    torch.manual_seed(0)
    model = model_for_dataset("small_cnn", bundle.info)
    if args.cached:
        from unlearnkit.oracle import train_or_load

        model = train_or_load(bundle, "small_cnn", None, seed=0, device=args.device).model
    elif args.train_epochs:
        train(
            model,
            bundle.train,
            default_recipe("fashion_mnist", "small_cnn", epochs=args.train_epochs),
            seed=0,
            device=args.device,
            progress=False,
        )
    retrained = None
    if args.with_retrained and args.cached:
        retrained = train_or_load(bundle, "small_cnn", split, seed=0, device=args.device).model
    elif args.with_retrained:
        torch.manual_seed(1)
        retrained = model_for_dataset("small_cnn", bundle.info)
    # warm-up: imports of scikit-learn / scipy are not part of the suite's cost
    import sklearn.linear_model
    import sklearn.svm  # noqa: F401

    t0 = time.perf_counter()
    rec = evaluate(model, bundle, split, retrained=retrained, device=args.device)
    total = time.perf_counter() - t0
    tm = rec["evaluation_timing"]
    fwd = tm["forward_seconds"]
    upd = tm["update_seconds"]
    comp = tm["compute_seconds"]
    svc = sum(v for k, v in comp.items() if k.startswith("mia_efficacy"))
    logreg = sum(v for k, v in comp.items() if "logreg" in k)
    rest = total - fwd - upd - svc - logreg
    n_models = 2 if retrained is not None else 1
    sizes = f"forget {len(split.forget)}, retain {len(split.retain)}, test {len(split.test)}"
    print(
        f"default suite, small_cnn, fashion_mnist {args.forget} ({sizes}), {n_models} model(s), "
        f"{args.threads} threads, device {args.device}, "
        + ("cached trained models" if args.cached else f"trained epochs {args.train_epochs}")
    )
    print(f"{'part':<38}{'seconds':>10}{'share':>9}")
    for name, v in (
        ("forward passes (all splits)", fwd),
        ("per-batch metric updates", upd),
        ("SVC attack fit + predict (MIA-Efficacy)", svc),
        ("logistic regression (SFR-on MIA)", logreg),
        ("other (checks, hashing, record)", rest),
    ):
        print(f"{name:<38}{v:>10.2f}{100 * v / total:>8.1f}%")
    print(f"{'total':<38}{total:>10.2f}{100.0:>8.1f}%")
    m = rec["models"]["unlearned"]["metrics"]
    print("metrics:", {k: round(v, 3) for k, v in m.items() if isinstance(v, float)})


if __name__ == "__main__":
    main()
