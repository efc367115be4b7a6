"""Benchmark read-outs of weight filtering (used by ``benchmarks/weight_filtering.py``): forget every class in
turn and tabulate FA / RA, deletion curves, class similarity and filter maps (the figure needs matplotlib).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from ..errors import MissingDependencyError
from ..filters import ClassFilters, fold_filters


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def _per_class_correct(
    model: nn.Module, ds: ImageDataset, num_classes: int, device: Any
) -> tuple[np.ndarray, np.ndarray]:
    correct = torch.zeros(num_classes, dtype=torch.long)
    total = torch.zeros(num_classes, dtype=torch.long)
    model.eval()
    for x, y in iter_batches(ds, 1024, device=device):
        pred = model(x).argmax(1).cpu()
        y = y.cpu()
        total += torch.bincount(y, minlength=num_classes)
        correct += torch.bincount(y[pred == y], minlength=num_classes)
    return correct.numpy(), total.numpy()


def _acc(correct: np.ndarray, total: np.ndarray, mask: np.ndarray) -> float:
    n = int(total[mask].sum())
    return 100.0 * float(correct[mask].sum()) / n if n else float("nan")


def evaluate_all_classes(
    model: nn.Module,
    filters: ClassFilters,
    train: Any,
    test: Any,
    *,
    sets: Sequence[Sequence[int]] = (),
    combine: str = "min",
    retrained: Mapping[tuple[int, ...], nn.Module] | None = None,
    device: str | torch.device = "cpu",
) -> list[dict[str, Any]]:
    """Forget every class in turn (and each set in ``sets``) by folding, and measure accuracies.

    For each request ``C`` the row holds (percent): ``fa_test`` (test images of ``C``), ``fa_train`` (training
    images of ``C``, the forget set), ``ra_test`` (test images of the other classes), the same for the original
    model (``orig_*``) and, where ``retrained[C]`` is given, for the retrained model (``rt_*``).
    """
    k = filters.num_classes
    train_ds, test_ds = as_image_dataset(train), as_image_dataset(test)
    dev = torch.device(device)
    model = model.to(dev).eval()
    oc_te, tot_te = _per_class_correct(model, test_ds, k, dev)
    oc_tr, tot_tr = _per_class_correct(model, train_ds, k, dev)
    requests = [(c,) for c in range(k)] + [tuple(sorted(int(c) for c in s)) for s in sets]
    rows = []
    ytr = train_ds.targets.numpy()
    for req in requests:
        mask = np.isin(np.arange(k), req)
        folded = fold_filters(model, filters, req, combine=combine)
        c_te, _ = _per_class_correct(folded, test_ds, k, dev)
        forget_ds = train_ds.subset(np.flatnonzero(np.isin(ytr, req)))
        c_tr, _ = _per_class_correct(folded, forget_ds, k, dev)
        row: dict[str, Any] = {
            "classes": req,
            "fa_test": _acc(c_te, tot_te, mask),
            "fa_train": _acc(c_tr, tot_tr, mask),
            "ra_test": _acc(c_te, tot_te, ~mask),
            "orig_fa_test": _acc(oc_te, tot_te, mask),
            "orig_fa_train": _acc(oc_tr, tot_tr, mask),
            "orig_ra_test": _acc(oc_te, tot_te, ~mask),
        }
        if retrained and req in retrained:
            rt = retrained[req].to(dev).eval()
            r_te, _ = _per_class_correct(rt, test_ds, k, dev)
            r_tr, _ = _per_class_correct(rt, forget_ds, k, dev)
            row.update(
                rt_fa_test=_acc(r_te, tot_te, mask),
                rt_fa_train=_acc(r_tr, tot_tr, mask),
                rt_ra_test=_acc(r_te, tot_te, ~mask),
            )
        rows.append(row)
    return rows


def rows_to_markdown(rows: Sequence[Mapping[str, Any]], class_names: Sequence[str] | None = None) -> str:
    """A markdown table of `evaluate_all_classes` rows (retrained columns only when present)."""
    has_rt = any("rt_fa_test" in r for r in rows)
    head = ["forget", "FA test", "FA train", "RA test", "orig FA test", "orig RA test"]
    if has_rt:
        head += ["RT FA test", "RT RA test"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def name(c: int) -> str:
        if class_names and c < len(class_names) and class_names[c] != str(c):
            return f"{c} {class_names[c]}"
        return str(c)

    def f(v: Any) -> str:
        return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"

    for r in rows:
        cells = [
            ", ".join(name(c) for c in r["classes"]),
            f(r["fa_test"]),
            f(r["fa_train"]),
            f(r["ra_test"]),
            f(r["orig_fa_test"]),
            f(r["orig_ra_test"]),
        ]
        if has_rt:
            cells += [f(r.get("rt_fa_test")), f(r.get("rt_ra_test"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------- explainability
@torch.no_grad()
def deletion_curve(
    model: nn.Module,
    filters: ClassFilters,
    c: int,
    dataset: Any,
    *,
    fractions: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
    ranking: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, float]:
    """Deletion curve: class-``c`` accuracy after zeroing the top-``q`` units ranked by ``a_{ranking}``.

    Units are ranked across all filtered layers by ``1 − α[ranking]`` (default ``ranking = c``); a faithful
    ranking makes the accuracy fall fast. Returns (accuracies in percent per fraction, area under the curve
    by the trapezoid rule over the fractions, normalised by their span, so in [0, 100]).
    """
    data = as_image_dataset(dataset)
    data = data.subset(np.flatnonzero(data.targets.numpy() == c))
    score = filters.vectors()[c if ranking is None else ranking]
    order = torch.argsort(score, descending=True, stable=True)
    widths = [s.width for s in filters.sites]
    accs = []
    for q in fractions:
        keep = torch.ones(score.numel())
        keep[order[: round(q * score.numel())]] = 0.0
        parts = dict(zip([s.name for s in filters.sites], torch.split(keep, widths), strict=False))
        mask = ClassFilters(filters.sites, {n: v[None, :] for n, v in parts.items()}, 1)
        net = fold_filters(model, mask, [0]).to(device).eval()
        correct = sum(int((net(x).argmax(1) == y).sum()) for x, y in iter_batches(data, 1024, device=device))
        accs.append(100.0 * correct / max(len(data), 1))
    arr = np.asarray(accs)
    xs = np.asarray(fractions, dtype=float)
    span = float(xs[-1] - xs[0]) or 1.0
    auc = float(np.sum((arr[1:] + arr[:-1]) / 2 * np.diff(xs)) / span) if len(xs) > 1 else float(arr[0])
    return arr, auc


def class_similarity(filters: ClassFilters) -> np.ndarray:
    """``K × K`` cosine similarity of the class vectors ``a_c = concat_l (1 − α^l[c])``.

    A class whose filter changes nothing (``a_c = 0``) has similarity 0 to every other class and 1 to itself.
    """
    a = filters.vectors().double()
    norms = a.norm(dim=1, keepdim=True)
    unit = torch.where(norms > 0, a / norms.clamp(min=1e-12), torch.zeros_like(a))
    sim = unit @ unit.T
    sim.fill_diagonal_(1.0)
    return sim.numpy()


def filter_maps(filters: ClassFilters) -> dict[str, np.ndarray]:
    """{layer name: ``K × O_l`` array of ``α``} (low = the unit must be suppressed to forget that class)."""
    return {s.name: filters.alphas[s.name].float().numpy() for s in filters.sites}


def top_units(filters: ClassFilters, c: int, k: int = 10) -> list[tuple[str, int, float]]:
    """The ``k`` units most suppressed for class ``c``: (layer, unit index, 1 − α)."""
    items = [(s.name, j, 1.0 - float(v)) for s in filters.sites for j, v in enumerate(filters.alphas[s.name][c])]
    return sorted(items, key=lambda t: -t[2])[:k]


def save_filter_maps(
    filters: ClassFilters,
    npz_path: str | os.PathLike,
    figure_path: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Save the per-class filter maps and the class-similarity matrix.

    Writes ``npz_path`` (``np.savez``: one ``alpha/<layer>`` array per site, ``similarity``, ``class_names``,
    ``layers``) and, when ``figure_path`` is given, a figure with one heat map per layer (rows = classes) and the
    similarity matrix. The figure needs matplotlib (``pip install unlearnkit[report]``).
    """
    maps = filter_maps(filters)
    sim = class_similarity(filters)
    names = list(class_names) if class_names else [str(c) for c in range(filters.num_classes)]
    arrays = {f"alpha/{n}": v for n, v in maps.items()}
    arrays.update(similarity=sim, class_names=np.asarray(names), layers=np.asarray(list(maps)))
    npz_path = Path(npz_path)

    def write_npz(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]

    out = {"npz": atomic_write(npz_path, write_npz)}
    if figure_path is not None:
        try:
            import matplotlib

            matplotlib.use("Agg", force=False)
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise MissingDependencyError(
                "the filter-map figure needs matplotlib: pip install 'unlearnkit[report]'"
            ) from exc
        n = len(maps) + 1
        cols = min(4, n)
        rows_n = -(-n // cols)
        fig, axes = plt.subplots(rows_n, cols, figsize=(4 * cols, 2.6 * rows_n), squeeze=False)
        for ax, (layer, m) in zip(axes.flat, maps.items(), strict=False):
            im = ax.imshow(m, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(layer, fontsize=8)
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names, fontsize=6)
            ax.set_xlabel("unit", fontsize=7)
        ax = axes.flat[len(maps)]
        ax.imshow(sim, cmap="magma", vmin=0, vmax=1)
        ax.set_title("class similarity (cos of 1 − α)", fontsize=8)
        ax.set_xticks(range(len(names)))
        ax.set_yticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=6, rotation=90)
        ax.set_yticklabels(names, fontsize=6)
        for extra in list(axes.flat)[n:]:
            extra.axis("off")
        fig.colorbar(im, ax=list(axes.flat)[: len(maps)], shrink=0.8, label="α (1 = kept)")
        figure_path = Path(figure_path)
        fmt = figure_path.suffix.lstrip(".") or "png"

        def write_fig(tmp: str) -> None:
            fig.savefig(tmp, format=fmt, dpi=120)

        try:
            out["figure"] = atomic_write(figure_path, write_fig)
        finally:
            plt.close(fig)
    return out


__all__ = [
    "class_similarity",
    "deletion_curve",
    "evaluate_all_classes",
    "filter_maps",
    "rows_to_markdown",
    "save_filter_maps",
    "top_units",
]
