"""Where the filters act: their config, the filtered layers (sites), the wrapper that trains them, the trained
filters and their fold into a plain model (see `unlearnkit.filters`)."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

FILTER_CODE_VERSION = 1
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
        from ..cache import save_verified

        tensors, header = self.to_tensors()
        return save_verified(Path(path), tensors, header)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ClassFilters:
        from ..cache import verify_file

        ok, why, tensors, header = verify_file(Path(path))
        if not ok or tensors is None:
            raise CheckpointError(
                f"filter file {Path(path).name} is unreadable or damaged ({why}); delete it to retrain the filters"
            )
        return cls.from_tensors(tensors, header, Path(path).name)


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
