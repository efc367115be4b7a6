"""`EvaluationCache`: forward outputs and metric values remembered across `evaluate` calls.

A benchmark evaluates the same original and retrained models once per method; their outputs and metric values do
not change, and the SVC attack dominates the cost. Pass one cache to every `evaluate` call of such a run
(``evaluate(..., cache=cache)``); ``cache=None`` remembers nothing. Entries are keyed by the model's weights hash,
the reference model's hash, the split digest and the metric set, so a hit is exact. Bounded LRU, in-process only.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any, TypeVar

import numpy as np

__all__ = ["Batch", "EvaluationCache"]

# one batch of a forward pass: logits (b, K), labels (b,), penultimate features (b, d) or None
Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None]
# (model hash, split digest, split part, batch size, with features, device)
ForwardKey = tuple[str, str | int, str, int, bool, str]
# (model hash, reference hash, split digest, split parts, metric names, metric options, |test|, device)
ValuesKey = tuple[str, str | None, str, tuple[str, ...], tuple[str, ...], str, int, str]
Values = tuple[dict[str, Any], dict[str, Any]]  # (metric values, diagnostics)

K = TypeVar("K")
V = TypeVar("V")


class EvaluationCache:
    """Bounded LRU memory of forward passes and metric values (see the module docstring).

    Args:
        max_entries: entries kept per kind (forward passes, metric values); the least recently used go first.

    Attributes:
        hits, misses: lookups answered from / missing in the cache, both kinds together.

    Example:
        >>> from unlearnkit.evaluation import EvalOptions, evaluate
        >>> from unlearnkit.testing import tiny_bundle, tiny_model, tiny_split
        >>> bundle, split, retrained = tiny_bundle(), tiny_split("class:1"), tiny_model(seed=1)
        >>> opts = EvalOptions(cache=EvaluationCache())
        >>> first = evaluate(tiny_model(seed=2), bundle, split, retrained=retrained, device="cpu", options=opts)
        >>> second = evaluate(tiny_model(seed=3), bundle, split, retrained=retrained, device="cpu", options=opts)
        >>> opts.cache.hits  # the retrained model's 4 forward passes and its metric values, reused
        5
    """

    def __init__(self, max_entries: int = 24) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._forward: OrderedDict[ForwardKey, list[Batch]] = OrderedDict()
        self._values: OrderedDict[ValuesKey, Values] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._forward) + len(self._values)

    def clear(self) -> None:
        self._forward.clear()
        self._values.clear()
        self.hits = self.misses = 0

    def forward(self, key: ForwardKey) -> list[Batch] | None:
        """The batches of a remembered forward pass, or ``None``."""
        return self._get(self._forward, key)

    def put_forward(self, key: ForwardKey, batches: list[Batch]) -> None:
        self._put(self._forward, key, batches)

    def values(self, key: ValuesKey) -> Values | None:
        """A copy of remembered ``(metric values, diagnostics)``, or ``None``."""
        hit = self._get(self._values, key)
        return None if hit is None else copy.deepcopy(hit)

    def put_values(self, key: ValuesKey, values: Values) -> None:
        self._put(self._values, key, copy.deepcopy(values))

    def _get(self, store: OrderedDict[K, V], key: K) -> V | None:
        if key not in store:
            self.misses += 1
            return None
        self.hits += 1
        store.move_to_end(key)
        return store[key]

    def _put(self, store: OrderedDict[K, V], key: K, value: V) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.max_entries:
            store.popitem(last=False)
