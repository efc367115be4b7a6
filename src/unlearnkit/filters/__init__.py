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
* The benchmark read-outs (forgetting every class in turn, class similarity, filter maps, deletion curves) live
  in the bench layer, `unlearnkit.bench.filter_analysis`.

Modules: `unlearnkit.filters.model` (config, sites, wrapper, trained filters, fold) and
`unlearnkit.filters.training` (training and the cache).

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

from .model import (
    FILTER_CODE_VERSION,
    FORGET_LOSSES,
    ClassFilters,
    FilterConfig,
    FilteredModel,
    FilterSite,
    combine_rows,
    find_sites,
    fold_filters,
)
from .training import (
    data_fingerprint,
    filter_cache_key,
    forget_term,
    get_or_train_filters,
    train_filters,
)

__all__ = [
    "FILTER_CODE_VERSION",
    "FORGET_LOSSES",
    "ClassFilters",
    "FilterConfig",
    "FilterSite",
    "FilteredModel",
    "combine_rows",
    "data_fingerprint",
    "filter_cache_key",
    "find_sites",
    "fold_filters",
    "forget_term",
    "get_or_train_filters",
    "train_filters",
]
