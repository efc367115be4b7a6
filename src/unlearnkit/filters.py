"""Per-class weight filters ("memory matrices", WF-Net): train once, then unlearn any class by folding.

Poppi, Sarto, Cornia, Baraldi, Cucchiara, "Multi-Class Unlearning for Image Classification via Weight
Filtering" (arXiv 2304.02049). The spec is methods.md §11; the losses are our design there and here.

Pieces:

* `find_sites` picks the filtered layers of a trained classifier (every ``Conv{1,2,3}d`` and ``nn.Linear``
  except the stem and the head, by default) and finds, by probing one forward pass, which of them feed a
  BatchNorm directly.
* `FilteredModel` wraps the frozen classifier and adds one learnable matrix ``α^l ∈ [0, 1]^{K × O_l}`` per
  site. ``model(x, request=…)`` scales output unit ``k`` of layer ``l`` by ``α^l[c, k]`` with forward hooks,
  per sample, so one batch may carry different requests.
* `train_filters` runs the single training round (all classes at once; only ``α`` learns);
  `get_or_train_filters` caches the result as safetensors under ``cache_dir()/"filters"``.
* `fold_filters` writes the filter of a class (or set of classes) into the weights and returns a plain
  ``nn.Module`` whose outputs equal the wrapper's: no wrapper at inference.
* `evaluate_all_classes` measures forgetting for every class (and a few sets); `class_similarity`,
  `filter_maps` and `save_filter_maps` give the explainable read-outs.

Where the filter acts when a convolution feeds a BatchNorm (``bn_fold``):

* ``"output"`` (default): the unit is conv + BN, and the filter scales the BN *output*. It folds exactly into
  BN's affine parameters (``γ_k ← α_k γ_k``, ``β_k ← α_k β_k``), and ``α_k = 0`` silences channel ``k``.
* ``"kernel"``: the paper's literal ``W_c = α_c ⊙ W`` on the convolution kernel. It folds exactly into the
  kernel too (BN runs on frozen running statistics), but ``α_k = 0`` leaves the constant
  ``β_k − γ_k μ_k / σ_k`` behind, so a kernel filter cannot switch a channel off.

Either way the filter is trained with the network in eval mode: with batch statistics, BN would divide a
kernel scale straight back out.

Combining the filters of a set of classes ``C`` (``combine``): ``"min"`` (default, methods.md) takes the
element-wise minimum ``α_C = min_{c∈C} α[c]`` (a unit is kept only as much as every request allows);
``"product"`` multiplies the rows (stronger: two half-suppressions make a three-quarter one).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._io import atomic_write
from .data.datasets import ImageDataset, to_float
from .data.loading import as_image_dataset, iter_batches
from .errors import CheckpointError, ConfigError, MissingDependencyError
from .progress import progress_bar

FILTER_CODE_VERSION = 1
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

FORGET_LOSSES = ("uniform_kl", "uniform_other_kl", "bounded_ascent", "wrong_class")
Request = int | Sequence[int] | torch.Tensor | None


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class FilterConfig:
    """How the filters are placed and trained (methods.md §11; losses and defaults are [OURS]).

    A plain frozen dataclass (this module does not import the method package, which imports it); the
    `weight_filtering` method's config extends it together with ``MethodConfig``.

    Args:
        epochs: passes over the training data ``D`` (all classes).
        lr: Adam learning rate of the filters ``α``.
        batch_size: mini-batch size.
        p_forget: ``p_f``, probability that a sample's request is its own class (forget role); otherwise the
            request is a uniformly drawn other class (retain role).
        lambda_forget: ``λ_f``, weight of the forget term.
        lambda_reg: ``λ_reg``, weight of the sparsity term ``mean_l mean |1 − α^l|``.
        forget_loss: ``uniform_other_kl`` (default: KL from the uniform distribution over the *other* K − 1
            classes, i.e. push ``p(c)`` to 0 and spread the mass evenly), ``uniform_kl`` (KL(uniform ‖ p), the
            methods.md default), ``bounded_ascent`` (``−min(CE, 3 ln K)``) or ``wrong_class`` (CE towards the
            most likely wrong class). Why not ``uniform_kl`` by default: a near-uniform output still picks the
            forgotten class about 1/K of the time; on digits/small_cnn it left FA at 2–24 % per class (mean
            10 %), while ``uniform_other_kl`` gives 0 % for every class with RA within 0.5 points, is bounded
            like ``uniform_kl`` and matches what a retrained model does (it never predicts ``c``).
        include_stem: filter the first Conv/Linear layer too.
        include_head: filter the classification head too.
        layers: comma-separated fnmatch patterns of module names to filter instead of the default choice
            (e.g. ``"blocks.*.mlp.fc1,blocks.*.attn.qkv"``).
        bn_fold: ``output`` (scale the output of a directly following BatchNorm) or ``kernel`` (scale the
            convolution kernel before the BatchNorm); see the module docstring.
        max_steps: stop training after this many optimizer steps (None: no limit).
    """

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 128
    p_forget: float = 0.5
    lambda_forget: float = 1.0
    lambda_reg: float = 1e-3
    forget_loss: Literal["uniform_kl", "uniform_other_kl", "bounded_ascent", "wrong_class"] = "uniform_other_kl"
    include_stem: bool = False
    include_head: bool = False
    layers: str | None = None
    bn_fold: Literal["output", "kernel"] = "output"
    max_steps: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @staticmethod
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    def validate(self) -> None:
        parent = getattr(super(), "validate", None)
        if parent is not None:
            parent()
        self.check(self.epochs >= 1, f"epochs must be ≥ 1, got {self.epochs}")
        self.check(self.lr > 0 and math.isfinite(self.lr), f"lr must be a finite number > 0, got {self.lr}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(0.0 < self.p_forget < 1.0, f"p_forget must be strictly between 0 and 1, got {self.p_forget}")
        self.check(self.lambda_forget >= 0, f"lambda_forget must be ≥ 0, got {self.lambda_forget}")
        self.check(self.lambda_reg >= 0, f"lambda_reg must be ≥ 0, got {self.lambda_reg}")
        self.check(
            self.forget_loss in FORGET_LOSSES,
            f"forget_loss must be one of {', '.join(FORGET_LOSSES)}, got {self.forget_loss!r}",
        )
        self.check(self.bn_fold in ("output", "kernel"), f"bn_fold must be 'output' or 'kernel', got {self.bn_fold!r}")
        self.check(self.max_steps is None or self.max_steps >= 1, f"max_steps must be ≥ 1, got {self.max_steps}")

    def training_dict(self) -> dict[str, Any]:
        """Only the fields of `FilterConfig` (what the trained filters depend on), for cache keys."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(FilterConfig)}


# ---------------------------------------------------------------------------------------------- sites
@dataclass(frozen=True)
class FilterSite:
    """One filtered layer.

    Attributes:
        name: the Conv/Linear module whose output units are filtered.
        kind: ``conv`` or ``linear``.
        width: number of output units ``O_l``.
        hook: the module whose output the wrapper scales (``name`` itself, or the BatchNorm after it).
        fold: what `fold_filters` scales: ``weight`` (the layer's weight rows and bias) or ``bn`` (γ and β of
            ``hook``).
    """

    name: str
    kind: str
    width: int
    hook: str
    fold: str

    @property
    def channel_dim(self) -> int:
        return -1 if self.kind == "linear" and self.fold == "weight" else 1


def _head_name(model: nn.Module, candidates: Sequence[tuple[str, nn.Module]]) -> str | None:
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        for name, mod in candidates:
            if mod is head:
                return name
    linears = [n for n, m in candidates if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def _example_input(model: nn.Module) -> torch.Tensor | None:
    cfg = getattr(model, "unlearnkit_config", None)
    if not cfg:
        return None
    s = int(cfg["image_size"])
    return torch.rand(2, int(cfg["in_channels"]), s, s, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _bn_successors(model: nn.Module, names: list[str], example: torch.Tensor | None) -> dict[str, str]:
    """{layer: bn} for layers whose output tensor is the *direct* input of a BatchNorm.

    Found by one probe forward pass (tensor identity); without an example input, falls back to module
    registration order (a BatchNorm registered right after the layer, with matching width).
    """
    mods = dict(model.named_modules())
    bns = {n: m for n, m in mods.items() if isinstance(m, _BN_TYPES)}
    if not bns:
        return {}
    if example is None:
        order = list(mods)
        out = {}
        for n in names:
            i = order.index(n)
            for nxt in order[i + 1 :]:
                if mods[nxt] is mods[n] or list(mods[nxt].children()):
                    continue
                if nxt in bns and bns[nxt].num_features == _width(mods[n]):
                    out[n] = nxt
                break
        return out
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: dict[str, str] = {}
    handles = []

    def after(name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_m: nn.Module, _i: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                produced[id(out)] = (name, out)

        return hook

    def before(name: str) -> Callable[[nn.Module, Any], None]:
        def hook(_m: nn.Module, inp: Any) -> None:
            if inp and isinstance(inp[0], torch.Tensor) and id(inp[0]) in produced:
                src, t = produced[id(inp[0])]
                if t is inp[0]:
                    pairs.setdefault(src, name)

        return hook

    for n in names:
        handles.append(mods[n].register_forward_hook(after(n)))
    for n, m in bns.items():
        handles.append(m.register_forward_pre_hook(before(n)))
    was = model.training
    try:
        model.eval()
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(example.to(dev))
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    return pairs


def _width(mod: nn.Module) -> int:
    width = mod.out_channels if isinstance(mod, _CONV_TYPES) else mod.out_features
    return int(cast(int, width))


def find_sites(
    model: nn.Module,
    config: FilterConfig | None = None,
    example: torch.Tensor | None = None,
) -> list[FilterSite]:
    """The filtered layers of ``model`` under ``config`` (default: all Conv/Linear but the stem and head)."""
    config = config or FilterConfig()
    candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, (*_CONV_TYPES, nn.Linear))]
    if not candidates:
        raise ConfigError("weight filtering needs Conv or Linear layers; the model has none")
    if config.layers:
        patterns = [p.strip() for p in config.layers.split(",") if p.strip()]
        chosen = [n for n, _ in candidates if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
        if not chosen:
            raise ConfigError(
                f"layers={config.layers!r} matches no Conv/Linear module; names look like "
                f"{', '.join(n for n, _ in candidates[:4])}, …"
            )
    else:
        stem, head = candidates[0][0], _head_name(model, candidates)
        chosen = [n for n, _ in candidates if (config.include_stem or n != stem) and (config.include_head or n != head)]
        if not chosen:
            raise ConfigError(
                "no layer is left to filter once the stem and head are excluded; set "
                "include_stem=true or include_head=true"
            )
    mods = dict(model.named_modules())
    pairs = {}
    if config.bn_fold == "output":
        pairs = _bn_successors(model, chosen, example if example is not None else _example_input(model))
    sites = []
    for n in chosen:
        m = mods[n]
        kind = "conv" if isinstance(m, _CONV_TYPES) else "linear"
        bn = pairs.get(n)
        if bn is not None and not mods[bn].affine:
            raise ConfigError(
                f"BatchNorm {bn!r} after {n!r} has no affine parameters to fold the filter into; set bn_fold=kernel"
            )
        sites.append(FilterSite(n, kind, _width(m), bn or n, "bn" if bn else "weight"))
    return sites


# ---------------------------------------------------------------------------------------------- wrapper
class FilteredModel(nn.Module):
    """A frozen classifier plus per-class filters ``α^l`` (``K × O_l``, in [0, 1], initialised to 1).

    ``forward(x, request)``:

    * ``request=None``: the original network (``α = 1``);
    * an ``int`` or a sequence of ints: unlearn that class / set of classes for the whole batch (rows
      combined with ``combine``);
    * a 1-D ``LongTensor`` of length ``len(x)``: one class per sample, ``-1`` meaning no request.

    Args:
        model: the trained classifier; its parameters are frozen and never modified.
        num_classes: ``K``.
        sites: the filtered layers (`find_sites`).
        alphas: optional trained filters {site name: K×O tensor}.
        combine: ``min`` or ``product`` for set requests.
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        sites: Sequence[FilterSite],
        alphas: Mapping[str, torch.Tensor] | None = None,
        combine: str = "min",
    ) -> None:
        super().__init__()
        self.model = model
        for p in model.parameters():
            p.requires_grad_(False)
        self.num_classes = num_classes
        self.sites = list(sites)
        self.combine = combine
        dev = next((p.device for p in model.parameters()), torch.device("cpu"))
        self.alphas = nn.ParameterList()
        for s in self.sites:
            init = alphas[s.name].detach().clone().float() if alphas is not None else torch.ones(num_classes, s.width)
            if tuple(init.shape) != (num_classes, s.width):
                raise CheckpointError(
                    f"filter of {s.name!r} has shape {tuple(init.shape)}, expected {(num_classes, s.width)}"
                )
            self.alphas.append(nn.Parameter(init.to(dev)))
        self._scales: list[torch.Tensor | None] = [None] * len(self.sites)
        mods = dict(model.named_modules())
        self._handles = [mods[s.hook].register_forward_hook(self._make_hook(i)) for i, s in enumerate(self.sites)]

    def _make_hook(self, i: int) -> Callable[[nn.Module, Any, Any], Any]:
        site = self.sites[i]

        def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
            s = self._scales[i]
            if s is None:
                return None
            if site.channel_dim == 1:
                shape = (s.shape[0], s.shape[1]) + (1,) * (out.ndim - 2)
            else:
                shape = (s.shape[0],) + (1,) * (out.ndim - 2) + (s.shape[1],)
            return out * s.view(shape)

        return hook

    def remove_hooks(self) -> None:
        """Detach the hooks from the wrapped model (the wrapper is unusable afterwards)."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def rows(self, classes: Iterable[int]) -> list[torch.Tensor]:
        """The combined filter ``α_C`` of each site for the set ``classes`` (one vector per site)."""
        return [combine_rows(a, classes, self.combine) for a in self.alphas]

    def forward(self, x: torch.Tensor, request: Request = None) -> torch.Tensor:
        try:
            if request is None:
                self._scales = [None] * len(self.sites)
            elif (
                isinstance(request, torch.Tensor)
                and request.ndim == 1
                and len(request) == len(x)
                and not request.dtype.is_floating_point
            ):
                req = request.to(x.device).long()
                none = req < 0
                idx = req.clamp(min=0)
                scales = []
                for a in self.alphas:
                    s = a[idx]
                    if bool(none.any()):
                        s = torch.where(none[:, None], torch.ones_like(s), s)
                    scales.append(s)
                self._scales = scales
            else:
                classes = (
                    [int(request)]
                    if isinstance(request, (int, np.integer))
                    or (isinstance(request, torch.Tensor) and request.ndim == 0)
                    else [int(c) for c in request]
                )
                self._check_classes(classes)
                self._scales = [r[None, :] for r in self.rows(classes)]
            return self.model(x)
        finally:
            self._scales = [None] * len(self.sites)

    def _check_classes(self, classes: Sequence[int]) -> None:
        bad = [c for c in classes if not 0 <= c < self.num_classes]
        if bad or not classes:
            raise ConfigError(f"filter request {list(classes)} must name classes in 0..{self.num_classes - 1}")

    @torch.no_grad()
    def clamp_(self) -> None:
        for a in self.alphas:
            a.clamp_(0.0, 1.0)

    def filters(self, meta: dict[str, Any] | None = None) -> ClassFilters:
        return ClassFilters(
            self.sites,
            {s.name: a.detach().cpu().clone() for s, a in zip(self.sites, self.alphas, strict=False)},
            self.num_classes,
            dict(meta or {}),
        )


def combine_rows(alpha: torch.Tensor, classes: Iterable[int], combine: str = "min") -> torch.Tensor:
    """Combine the rows ``alpha[c]`` of ``classes``: element-wise ``min`` or ``product``."""
    idx = torch.as_tensor(sorted({int(c) for c in classes}), dtype=torch.long, device=alpha.device)
    if idx.numel() == 0:
        return torch.ones(alpha.shape[1], device=alpha.device, dtype=alpha.dtype)
    rows = alpha[idx]
    if combine == "min":
        return rows.min(0).values
    if combine == "product":
        return rows.prod(0)
    raise ConfigError(f"combine must be 'min' or 'product', got {combine!r}")


# ----------------------------------------------------------------------------------------- trained filters
@dataclass
class ClassFilters:
    """Trained filters: the sites, one ``K × O_l`` matrix per site, and training metadata."""

    sites: list[FilterSite]
    alphas: dict[str, torch.Tensor]
    num_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def row(self, classes: Iterable[int], combine: str = "min") -> dict[str, torch.Tensor]:
        classes = list(classes)
        bad = [c for c in classes if not 0 <= int(c) < self.num_classes]
        if bad or not classes:
            raise ConfigError(f"classes {classes} must be a non-empty set of classes in 0..{self.num_classes - 1}")
        return {s.name: combine_rows(self.alphas[s.name], classes, combine) for s in self.sites}

    def vectors(self) -> torch.Tensor:
        """``a_c = concat_l (1 − α^l[c])`` for every class: a ``K × Σ O_l`` matrix (large = class-specific)."""
        return torch.cat([1.0 - self.alphas[s.name].float() for s in self.sites], dim=1)

    def num_parameters(self) -> int:
        return sum(int(a.numel()) for a in self.alphas.values())

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The filter matrices and a header (sites, classes, metadata) as safetensors metadata."""
        tensors = {f"alpha/{s.name}": self.alphas[s.name].detach().cpu().float().contiguous() for s in self.sites}
        header = {
            "unlearnkit_filters": json.dumps(
                {
                    "version": FILTER_CODE_VERSION,
                    "num_classes": self.num_classes,
                    "sites": [dataclasses.asdict(s) for s in self.sites],
                    "meta": self.meta,
                },
                default=str,
            )
        }
        return tensors, header

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], header: dict[str, str], source: str = "") -> ClassFilters:
        try:
            info = json.loads(header["unlearnkit_filters"])
            sites = [FilterSite(**s) for s in info["sites"]]
            alphas = {s.name: tensors[f"alpha/{s.name}"] for s in sites}
        except Exception as exc:  # any failure means the file is unusable
            raise CheckpointError(
                f"filter file {source} is unreadable ({type(exc).__name__}: {exc}); delete it to retrain the filters"
            ) from exc
        return cls(sites, alphas, int(info["num_classes"]), info.get("meta", {}))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the filters as safetensors (atomically, with their SHA-256); sites and metadata in the header."""
        from .cache import save_verified

        tensors, header = self.to_tensors()
        return save_verified(Path(path), tensors, header)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassFilters:
        from .cache import verify_file

        ok, why, tensors, header = verify_file(Path(path))
        if not ok or tensors is None:
            raise CheckpointError(
                f"filter file {Path(path).name} is unreadable or damaged ({why}); delete it to retrain the filters"
            )
        return cls.from_tensors(tensors, header, Path(path).name)


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
    from .cache import TensorCache

    return TensorCache("filters", version=FILTER_CODE_VERSION)


def filter_cache_key(model: nn.Module, dataset: Any, num_classes: int, config: FilterConfig, seed: int) -> str:
    from .cache import model_sha256

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


# ------------------------------------------------------------------------------------------------ folding
@torch.no_grad()
def fold_filters(
    model: nn.Module, filters: ClassFilters, classes: Iterable[int], *, combine: str = "min", inplace: bool = False
) -> nn.Module:
    """A plain model that unlearns ``classes``: their combined filter written into the weights.

    ``weight`` sites scale the layer's weight rows (output channels) and bias; ``bn`` sites scale γ and β of
    the BatchNorm after the layer. The result equals ``FilteredModel(model, …)(x, request=classes)``.
    """
    import copy

    out = model if inplace else copy.deepcopy(model)
    rows = filters.row(classes, combine)
    mods = dict(out.named_modules())
    for s in filters.sites:
        if s.hook not in mods or s.name not in mods:
            raise ConfigError(f"the filters were trained for a model with a layer {s.hook!r}; this model has none")
        target = mods[s.hook]
        r = rows[s.name]
        if s.fold == "bn" and target.weight is None:
            raise ConfigError(f"BatchNorm {s.hook!r} has no affine parameters to fold the filter into")
        for p in (target.weight, target.bias):  # the unit's whole output: weight rows (or γ) and bias (or β)
            if p is None:
                continue
            if p.shape[0] != r.numel():
                raise ConfigError(f"filter of {s.name!r} has {r.numel()} units but the layer has {p.shape[0]}")
            p.mul_(r.to(p.device, p.dtype).view((-1,) + (1,) * (p.ndim - 1)))
    return out


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
    "ClassFilters",
    "FilterConfig",
    "FilterSite",
    "FilteredModel",
    "class_similarity",
    "combine_rows",
    "data_fingerprint",
    "deletion_curve",
    "evaluate_all_classes",
    "filter_cache_key",
    "filter_maps",
    "find_sites",
    "fold_filters",
    "forget_term",
    "get_or_train_filters",
    "rows_to_markdown",
    "save_filter_maps",
    "top_units",
    "train_filters",
]
