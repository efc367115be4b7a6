"""How much does unlearnkit's loop cost over a bare PyTorch loop doing the same steps?

For ``ft`` and ``salun`` on one trained model, the script times (a) ``unlearnkit.run_method`` and (b) a plain
hand-written PyTorch loop with the same optimizer, batch size, number of steps and per-step work (SalUn: the
same saliency pass, masked gradients and frozen-weight reset), alternating the two ``--repeats`` times in one
process, and prints the median of each and their ratio (the README's target: ≤ 1.10×).

    python benchmarks/loop_overhead.py --dataset fashion_mnist --epochs 1 --repeats 3
    python benchmarks/loop_overhead.py --dataset digits --epochs 5 --repeats 5      # seconds, for a quick look
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from unlearnkit.data import load_dataset, split_for
from unlearnkit.data.loading import iter_batches
from unlearnkit.methods import UnlearnData, create_method
from unlearnkit.methods._saliency import global_topk_mask, gradient_saliency
from unlearnkit.oracle import train_or_load
from unlearnkit.runner import run_method


def bare_ft(model: nn.Module, data: UnlearnData, epochs: int, lr: float, bs: int) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for x, y in iter_batches(data.retain, bs, shuffle=True, generator=g):  # type: ignore[arg-type]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def bare_salun(model: nn.Module, data: UnlearnData, epochs: int, lr: float, bs: int, k: int) -> None:
    g = torch.Generator().manual_seed(0)
    mask = global_topk_mask(gradient_saliency(model, data.forget, batch_size=bs, device="cpu"), 0.5)
    params = dict(model.named_parameters())
    theta0 = {n: params[n].detach().clone() for n in mask}
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    for _ in range(epochs):
        for source, relabel in ((data.forget, True), (data.retain, False)):
            for x, y in iter_batches(source, bs, shuffle=True, generator=g):  # type: ignore[arg-type]
                if relabel:
                    y = torch.randint(0, k, (len(y),), generator=g)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                for n, p in params.items():
                    if p.grad is not None:
                        p.grad.mul_(mask[n])
                opt.step()
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(torch.where(mask[n].bool(), p, theta0[n]))
                        st = opt.state.get(p, {}).get("momentum_buffer")
                        if st is not None:
                            st.mul_(mask[n])


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--model", default="small_cnn")
    p.add_argument("--forget", default="random:0.1")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bundle = load_dataset(args.dataset)
    split = split_for(bundle, args.forget, 0)
    data = UnlearnData.from_split(bundle, split)
    original = train_or_load(bundle, args.model, None, seed=0, device="cpu").model
    k = bundle.info.num_classes
    common = {"epochs": args.epochs, "lr": 0.01, "batch_size": 256, "momentum": 0.9, "weight_decay": 5e-4}
    rows = []
    for name in ("ft", "salun"):
        ours: list[float] = []
        bare: list[float] = []
        for _ in range(args.repeats):
            m = create_method(name, **common)
            ours.append(timed(lambda m=m: run_method(m, original, data, device="cpu")))
            model = copy.deepcopy(original)  # run_method copies too
            if name == "ft":
                bare.append(timed(lambda model=model: bare_ft(model, data, args.epochs, 0.01, 256)))
            else:
                bare.append(timed(lambda model=model: bare_salun(model, data, args.epochs, 0.01, 256, k)))
        a, b = statistics.median(ours), statistics.median(bare)
        rows.append((name, a, b, a / b))
    print(f"{args.dataset} × {args.model}, {args.forget}, {args.epochs} epochs, median of {args.repeats}:")
    print("| method | unlearnkit (s) | bare PyTorch (s) | ratio |")
    print("|---|--:|--:|--:|")
    for name, a, b, r in rows:
        print(f"| {name} | {a:.2f} | {b:.2f} | {r:.2f}× |")


if __name__ == "__main__":
    main()
