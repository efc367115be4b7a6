"""Plain supervised training: the original model (all training data) and the retrained oracle (retain only)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .data.datasets import Augment
from .data.loading import iter_batches, num_batches
from .errors import ConfigError
from .models import memory_format
from .progress import progress_bar


@dataclass(frozen=True, kw_only=True)
class Recipe:
    """A training recipe. ``schedule`` is applied per step; ``augment`` uses the dataset's augmentation."""

    epochs: int = 10
    batch_size: int = 128
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "onecycle"
    augment: bool = False
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"recipe needs epochs ≥ 1 and batch_size ≥ 1, got {self.epochs} and {self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"recipe lr must be > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam", "adamw"):
            raise ConfigError(f"recipe optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        if self.schedule not in ("cosine", "onecycle", "constant"):
            raise ConfigError(f"recipe schedule must be cosine, onecycle or constant, got {self.schedule!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Default recipes per (dataset, model), measured in the README. No augmentation for the small datasets:
# the original must memorise its training set, or forgetting random samples is no test at all.
DEFAULT_RECIPES: dict[tuple[str, str], Recipe] = {
    ("fashion_mnist", "small_cnn"): Recipe(
        epochs=15, batch_size=128, optimizer="sgd", lr=0.08, weight_decay=0.0, schedule="onecycle"
    ),
    ("fashion_mnist", "resnet18"): Recipe(epochs=8, batch_size=128, optimizer="sgd", lr=0.08, schedule="onecycle"),
    ("fashion_mnist", "vit_tiny"): Recipe(
        epochs=15, batch_size=128, optimizer="adamw", lr=2e-3, weight_decay=0.05, schedule="onecycle"
    ),
    ("digits", "small_cnn"): Recipe(epochs=30, batch_size=64, optimizer="sgd", lr=0.05, schedule="onecycle"),
    ("synthetic", "small_cnn"): Recipe(epochs=10, batch_size=32, optimizer="sgd", lr=0.05, schedule="onecycle"),
}
FALLBACK_RECIPE = Recipe()


def default_recipe(dataset: str, model: str, **overrides: Any) -> Recipe:
    base = DEFAULT_RECIPES.get((dataset, model))
    if base is None:
        base = next((r for (d, _), r in DEFAULT_RECIPES.items() if d == dataset), FALLBACK_RECIPE)
    return replace(base, **overrides) if overrides else base


def make_optimizer(
    params: Any, name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ConfigError(f"unknown optimizer {name!r}; use sgd, adam or adamw")


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``."""
    t = step / max(total, 1)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    # onecycle: linear warm-up over the first 15 %, cosine decay to zero after
    warm = 0.15
    if t < warm:
        return 0.1 + 0.9 * t / warm
    return 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


@dataclass
class TrainStats:
    epochs: int
    steps: int
    wall_seconds: float
    final_loss: float
    accuracy_train: float | None = None


def train(
    model: nn.Module,
    dataset: Dataset,
    recipe: Recipe,
    *,
    seed: int = 0,
    augment: Augment | None = None,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    desc: str = "train",
) -> TrainStats:
    """Train ``model`` in place on ``dataset`` with ``recipe``; deterministic for a seed on CPU."""
    fmt = memory_format(model)
    model.to(device, memory_format=fmt).train()  # type: ignore[call-overload]  # torch's stubs omit memory_format
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), recipe.optimizer, recipe.lr, recipe.momentum, recipe.weight_decay)
    drop_last = len(dataset) > recipe.batch_size  # type: ignore[arg-type]  # torch's Dataset declares no __len__
    steps_per_epoch = num_batches(dataset, recipe.batch_size, drop_last=drop_last)
    total = recipe.epochs * steps_per_epoch
    aug = augment if recipe.augment else None
    step, loss_val, t0 = 0, float("nan"), time.perf_counter()
    with progress_bar(desc, recipe.epochs, progress) as bar:
        for epoch in range(recipe.epochs):
            run_loss, run_n = 0.0, 0
            for x, y in iter_batches(
                dataset,
                recipe.batch_size,
                shuffle=True,
                generator=gen,
                augment=aug,
                device=device,
                drop_last=drop_last,
            ):
                for g in opt.param_groups:
                    g["lr"] = recipe.lr * lr_factor(recipe.schedule, step, total)
                x = x.contiguous(memory_format=fmt)
                loss = nn.functional.cross_entropy(model(x), y, label_smoothing=recipe.label_smoothing)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                run_loss += float(loss.detach()) * len(y)
                run_n += len(y)
            loss_val = run_loss / max(run_n, 1)
            if not math.isfinite(loss_val):
                raise ConfigError(f"training diverged at epoch {epoch + 1} (loss {loss_val}); lower the recipe's lr")
            bar.advance(description=f"{desc} loss {loss_val:.3f}")
    model.eval()
    return TrainStats(recipe.epochs, step, time.perf_counter() - t0, loss_val)


@torch.no_grad()
def predict_logits(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 1024, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of ``dataset`` in eval mode, on CPU."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    fmt = memory_format(model)
    model.to(memory_format=fmt)  # type: ignore[call-overload]  # layout only: values are unchanged
    for x, y in iter_batches(dataset, batch_size, device=device):
        outs.append(model(x.contiguous(memory_format=fmt)).float().cpu())
        ys.append(y.cpu())
    model.train(was_training)
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(ys)


def accuracy(model: nn.Module, dataset: Dataset, *, device: str | torch.device = "cpu") -> float:
    """Top-1 accuracy in percent."""
    logits, y = predict_logits(model, dataset, device=device)
    return float((logits.argmax(1) == y).float().mean() * 100) if len(y) else float("nan")
