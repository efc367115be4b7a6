"""Weight filtering (WF-Net): per-class filters trained once; unlearning any class is a fold, no training."""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset
from ..errors import ConfigError, IncompatibleError
from ..filters import FilterConfig, fold_filters, get_or_train_filters
from ..models import num_outputs
from . import register
from ._common import concat_images
from .base import MethodConfig, Requirements, RunContext, UnlearnData
from .one_shot import OneShotMethod


@dataclass(frozen=True, kw_only=True)
class WeightFilteringConfig(FilterConfig, MethodConfig):
    """Filter training settings (see `unlearnkit.filters.FilterConfig`) plus how a request is served.

    Args:
        combine: how the filters of several forget classes combine: ``min`` (element-wise minimum of the
            rows, default) or ``product``.
        cache: keep trained filters in ``cache_dir()/"filters"`` (keyed by the model's weights, the data,
            this training config and the seed) and reuse them for every later request.
    """

    combine: Literal["min", "product"] = "min"
    cache: bool = True

    def validate(self) -> None:
        super().validate()
        self.check(self.combine in ("min", "product"), f"combine must be 'min' or 'product', got {self.combine!r}")

    def filter_config(self) -> FilterConfig:
        return FilterConfig(**self.training_dict())


@register("weight_filtering", aliases=("wf", "wfnet", "wf_net"))
class WeightFiltering(OneShotMethod[None]):
    """Multi-class unlearning by weight filtering: select class ``c``'s filter and fold it into the weights.

    Paper: Poppi, Sarto, Cornia, Baraldi, Cucchiara, "Multi-Class Unlearning for Image Classification via
    Weight Filtering", arXiv 2304.02049 (IEEE Intelligent Systems 2024).

    What is optimised: once per (model, data, config, seed), per-class filters ``α^l ∈ [0, 1]^{K × O_l}`` on
    the output units of the filtered layers, with the original weights ``θ_o`` frozen, minimising
    ``L_r + λ_f L_f + λ_reg mean_l mean|1 − α^l|`` over ``D = D_f ∪ D_r`` where each sample's request is its
    own class with probability ``p_f`` (forget role, ``L_f``: by default KL from the uniform distribution over
    the other classes) and another class otherwise (retain role, ``L_r``: CE). The losses are our design
    (methods.md §11). Unlearning is then a single round without training: the row ``α[c]`` (or
    ``min_{c∈C} α[c]`` for a set) is folded into the weights, so the result is a plain model.

    Args:
        epochs, lr, batch_size: ``E``, Adam learning rate and batch size of the filter training.
        p_forget: ``p_f``. lambda_forget: ``λ_f``. lambda_reg: ``λ_reg``.
        forget_loss: ``L_f``: ``uniform_other_kl`` (default; see `FilterConfig` for why it replaces the
            methods.md default ``uniform_kl``), ``uniform_kl``, ``bounded_ascent`` or ``wrong_class``.
        include_stem, include_head, layers: which layers carry filters (default: every Conv/Linear but the
            stem and the head).
        bn_fold: ``output`` (filter a following BatchNorm's output, folded into γ/β) or ``kernel``.
        combine: ``min`` or ``product`` across forget classes. cache: reuse trained filters.
    """

    Config: ClassVar[type[MethodConfig]] = WeightFilteringConfig
    requires: ClassVar[Requirements] = Requirements(retain=True, split_kinds=frozenset({"class"}))
    paper: ClassVar[str | None] = "Poppi et al., Multi-Class Unlearning for Image Classification via Weight Filtering"
    summary: ClassVar[str] = "per-class filters trained once; forgetting a class folds its filter (no training)"
    smoke_config: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 64, "lr": 0.05, "cache": False}

    def check_compatible(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        """Class-wise only. Without a split, the forget set counts as class-wise when its labels are absent
        from the retain set (then the forget classes are its unique labels)."""
        has_retain = data.retain is not None and len(data.retain) > 0  # type: ignore[arg-type]
        if data.split is None and len(data.forget) and has_retain:  # type: ignore[arg-type]
            classes = _labels(data.forget)
            overlap = sorted(classes & _labels(data.retain))
            if overlap:
                raise IncompatibleError(
                    [
                        f"`{self.name}` forgets whole classes, but classes {overlap} of the forget "
                        "set also occur in the retain set; pass a class-wise split (class:…)"
                    ]
                )
            data = replace(data, split=SimpleNamespace(is_classwise=True, forget_classes=tuple(sorted(classes))))
        super().check_compatible(model, data, ctx)

    def edit(self, model: nn.Module, data: UnlearnData, prepared: None, ctx: RunContext) -> nn.Module:
        c = self.config
        classes = data.forget_classes or tuple(sorted(_labels(data.forget)))
        k = data.num_classes or num_outputs(model)
        if k is None:
            raise ConfigError("cannot tell the number of classes; pass UnlearnData(num_classes=…)")
        bad = [x for x in classes if not 0 <= x < k]
        if bad:
            raise ConfigError(f"forget classes {bad} are outside 0..{k - 1}")
        model.to(ctx.device).eval()
        train_set = _concat(data.forget, data.retain)
        filters, hit = get_or_train_filters(
            model,
            train_set,
            k,
            c.filter_config(),
            seed=ctx.seed,
            device=ctx.device,
            cache=c.cache,
            progress=ctx.progress,
        )
        meta = filters.meta
        ctx.log(
            from_cache=float(hit),
            filter_steps=float(meta.get("steps", 0)),
            filter_train_seconds=float(meta.get("wall_seconds", 0.0)),
            filter_params=float(filters.num_parameters()),
            forget_classes=float(len(classes)),
        )
        fold_filters(model, filters, classes, combine=c.combine, inplace=True)
        return model.eval()


def _labels(ds: Any) -> set[int]:
    return {int(v) for v in torch.unique(as_image_dataset(ds).targets)}


def _concat(forget: Any, retain: Any) -> ImageDataset:
    """``D = D_f ∪ D_r`` as one dataset (the filters are trained on all classes).

    Stably sorted by label, so every class-wise split of one training set gives the same dataset (and hence
    the same trained filters, whichever class the first request names).
    """
    f, r = as_image_dataset(forget), as_image_dataset(retain)
    images = concat_images(f.images, r.images)
    y = torch.cat([f.targets, r.targets])
    order = torch.argsort(y, stable=True)
    return ImageDataset(images[order], y[order])
