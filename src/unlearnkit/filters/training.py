"""Learning the filters once (`train_filters`) and keeping them in the verified cache (`get_or_train_filters`)."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.datasets import to_float
from ..data.loading import as_image_dataset, iter_batches
from ..errors import CheckpointError, ConfigError
from ..progress import progress_bar
from .model import FILTER_CODE_VERSION, ClassFilters, FilterConfig, FilteredModel, find_sites


def forget_term(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The forget loss ``L_f`` on samples whose request is their own class (methods.md §11 options)."""
    k = logits.shape[1]
    if kind == "uniform_kl":  # KL(U ‖ p) = −log K − mean_k log p_k
        return (-F.log_softmax(logits, 1).mean(1) - math.log(k)).mean()
    if kind == "uniform_other_kl":  # KL(U_{≠y} ‖ p): all mass off class y, spread evenly over the others
        logp = F.log_softmax(logits, 1)
        off = torch.ones_like(logp).scatter_(1, y[:, None], 0.0) / (k - 1)
        return (-(off * logp).sum(1) - math.log(k - 1)).mean()
    if kind == "bounded_ascent":
        return -F.cross_entropy(logits, y, reduction="none").clamp(max=3 * math.log(k)).mean()
    if kind == "wrong_class":
        masked = logits.detach().scatter(1, y[:, None], float("-inf"))
        return F.cross_entropy(logits, masked.argmax(1))
    raise ConfigError(f"unknown forget_loss {kind!r}")


def train_filters(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    config: FilterConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool | None = False,
) -> ClassFilters:
    """The single training round: learn ``α`` for all ``K`` classes at once; ``model`` is left untouched.

    Per sample the request is its own class with probability ``p_forget`` (forget role), otherwise a random
    other class (retain role). Loss ``L_r + λ_f L_f + λ_reg mean_l mean|1 − α^l|``; Adam on ``α`` only,
    clamped to [0, 1] after every step. The network runs in eval mode (frozen BatchNorm statistics).
    """
    config = config or FilterConfig()
    dev = torch.device(device)
    data = as_image_dataset(dataset)
    if len(data) == 0:
        raise ConfigError("training the filters needs labelled data of all classes; the dataset is empty")
    present = {int(c) for c in torch.unique(data.targets)}
    if max(present) >= num_classes:
        raise ConfigError(f"labels go up to {max(present)} but num_classes is {num_classes}")
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.to(dev).eval()
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    example = to_float(data.images[:2]).to(dev)
    sites = find_sites(model, config, example)
    net = FilteredModel(model, num_classes, sites)
    opt = torch.optim.Adam(list(net.alphas.parameters()), lr=config.lr)
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = -(-len(data) // config.batch_size)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    step, t0 = 0, time.perf_counter()
    sums = {"loss": 0.0, "retain": 0.0, "forget": 0.0, "reg": 0.0}
    try:
        with progress_bar("weight filters", total, progress) as bar:
            for _ in range(config.epochs):
                for x, y in iter_batches(data, config.batch_size, shuffle=True, generator=gen, device=dev):
                    if step >= total:
                        break
                    u = torch.rand(len(y), generator=gen).to(dev)
                    other = (y + torch.randint(1, num_classes, (len(y),), generator=gen).to(dev)) % num_classes
                    req = torch.where(u < config.p_forget, y, other)
                    logits = net(x, request=req)
                    fmask = req == y
                    zero = logits.sum() * 0.0
                    l_r = F.cross_entropy(logits[~fmask], y[~fmask]) if bool((~fmask).any()) else zero
                    l_f = forget_term(logits[fmask], y[fmask], config.forget_loss) if bool(fmask.any()) else zero
                    l_reg = torch.stack([(1.0 - a).abs().mean() for a in net.alphas]).mean()
                    loss = l_r + config.lambda_forget * l_f + config.lambda_reg * l_reg
                    if not torch.isfinite(loss.detach()):
                        raise ConfigError(f"filter training diverged at step {step} (loss {float(loss)}); lower lr")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    net.clamp_()
                    step += 1
                    for k, v in (("loss", loss), ("retain", l_r), ("forget", l_f), ("reg", l_reg)):
                        sums[k] += float(v.detach())
                    bar.advance()
                if step >= total:
                    break
    finally:
        net.remove_hooks()
        model.train(was_training)
        for p, flag in zip(model.parameters(), grad_flags, strict=False):
            p.requires_grad_(flag)
    after = model.state_dict()
    if any(not torch.equal(before[k], after[k]) for k in before):  # pragma: no cover - a bug guard
        raise RuntimeError("filter training modified the frozen weights")
    wall = time.perf_counter() - t0
    meta = {
        "config": config.training_dict(),
        "seed": seed,
        "steps": step,
        "wall_seconds": round(wall, 3),
        "train_size": len(data),
        "device": str(dev),
        "mean_losses": {k: v / max(step, 1) for k, v in sums.items()},
    }
    return net.filters(meta)


# ------------------------------------------------------------------------------------------------ cache
def data_fingerprint(dataset: Any) -> str:
    """An exact, order-independent digest of a labelled dataset: the sorted SHA-256 of every (image, label) row.

    Order-independent so that ``forget ∪ retain`` of any class-wise split of the same training set gives the
    same key, and the filters are trained once for all requests; exact, so two different datasets never share one.
    """
    data = as_image_dataset(dataset)
    images = data.images.contiguous().reshape(len(data), -1).numpy()
    rows = sorted(
        hashlib.sha256(images[i].tobytes() + int(y).to_bytes(8, "little")).digest()
        for i, y in enumerate(data.targets.tolist())
    )
    return hashlib.sha256(f"{images.dtype}{tuple(data.images.shape[1:])}".encode() + b"".join(rows)).hexdigest()


def _filter_cache() -> Any:
    from ..cache import TensorCache

    return TensorCache("filters", version=FILTER_CODE_VERSION)


def filter_cache_key(model: nn.Module, dataset: Any, num_classes: int, config: FilterConfig, seed: int) -> str:
    from ..cache import model_sha256

    return _filter_cache().key(
        model=model_sha256(model),
        data=data_fingerprint(dataset),
        num_classes=num_classes,
        config=config.training_dict(),
        seed=seed,
    )


def get_or_train_filters(
    model: nn.Module,
    dataset: Any,
    num_classes: int,
    config: FilterConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    cache: bool = True,
    progress: bool | None = False,
) -> tuple[ClassFilters, bool]:
    """Cached filters for (model weights, data, config, seed), training them once if missing.

    Returns ``(filters, from_cache)``. The entry lives in the library's verified cache (namespace ``filters``):
    a damaged entry is discarded with a warning and the filters are trained again.
    """
    config = config or FilterConfig()
    key = filter_cache_key(model, dataset, num_classes, config, seed)
    store = _filter_cache()
    if cache:
        hit = store.load_with_meta(key)
        if hit is not None:
            tensors, header = hit
            try:
                return ClassFilters.from_tensors(tensors, header, source=store.path(key).name), True
            except CheckpointError:
                store.path(key).unlink(missing_ok=True)  # readable but not filters: retrain below
    filters = train_filters(model, dataset, num_classes, config, seed=seed, device=device, progress=progress)
    filters.meta["cache_key"] = key
    if cache:
        tensors, header = filters.to_tensors()
        store.save(key, tensors, header)
    return filters, False
