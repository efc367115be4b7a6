"""The metric contract: `Outputs`, `MetricInfo`, `MetricOptions`, the `Metric` base class and its registry,
the evaluation splits and the derived keys (the metric classes themselves live in `unlearnkit.evaluation.metrics`).

Contract (style.md §10): a metric declares ``needs`` (the evaluation splits it reads),
``needs_reference`` (it compares with the retrained model's outputs on the same samples), ``unit`` and
``higher_is_better`` (``None`` = the target is the retrained model's value). `EvaluationSuite` runs
one forward pass per (model, split) and calls ``update`` of every metric with the same `Outputs`;
``compute`` returns ``{key: value}`` and may fit an attack (MIAs keep O(N) per-sample floats).

Evaluation splits: ``forget``, ``retain`` (whole retain set, index order), ``test`` (the test set used
for ``accuracy_test``: for class-wise forgetting, the test images of the remaining classes) and
``test_forgotten_classes`` (class-wise only).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..registry import Registry

EVAL_SPLITS = (
    "forget",
    "retain",
    "test",
    "test_forgotten_classes",
    # manipulated data only (`unlearnkit.data.manipulations.manipulation_eval_sets`)
    "manipulated",
    "test_triggered",
    "test_triggered_target_class",
    "test_pair_swapped",
)
AVG_GAP_BASE = ("accuracy_forget", "accuracy_retain", "accuracy_test")  # with the MIA flavour's key: Avg. Gap (§1.5)
MIA_FLAVOURS = {"svc_confidence": "mia_efficacy_forget", "entropy_logreg": "mia_member_rate_forget_entropy_logreg"}


@dataclass
class Outputs:
    """One batch of a model's outputs on one split.

    Attributes:
        logits: (b, K) float32 logits on CPU (numpy).
        labels: (b,) int64 true labels.
        offset: index of the first sample of this batch inside the split.
    """

    logits: np.ndarray
    labels: np.ndarray
    offset: int = 0


@dataclass(frozen=True)
class MetricInfo:
    """What `metric_table()` and the record's ``metric_meta`` say about one key."""

    name: str
    unit: str
    higher_is_better: bool | None
    default: bool
    section: str
    summary: str = ""
    kind: str = "metric"  # metric | derived | audit
    gap: bool = True  # whether a gap to the retrained model is reported

    @property
    def direction(self) -> str:
        return {True: "higher", False: "lower", None: "closer"}[self.higher_is_better]


@dataclass(frozen=True)
class MetricOptions:
    """Options of the streamed metrics; each metric reads the ones that concern it.

    Attributes:
        reproduce: compute the m_entropy feature with the published bug (§1.4; ``mia_efficacy_forget_m_entropy``).
        retain_limit: keep only the first ``retain_limit`` retain samples as the SVC's shadow members (§1.4;
            the ``mia_efficacy_forget*`` metrics). `EvaluationSuite` sets it to the size of the test set.
        asr_include_target_class: ``asr_test`` also counts triggered test images of the target class, as
            [SPARSE]'s attack_acc does (§5); ``reproduce`` implies it.
    """

    reproduce: bool = False
    retain_limit: int | None = None
    asr_include_target_class: bool = False

    def __post_init__(self) -> None:
        reproduce: object = self.reproduce  # as passed, whatever the annotation says
        if not isinstance(reproduce, bool):
            raise ConfigError(f"metric option reproduce must be True or False, got {reproduce!r}")
        include: object = self.asr_include_target_class
        if not isinstance(include, bool):
            raise ConfigError(f"metric option asr_include_target_class must be True or False, got {include!r}")
        limit: object = self.retain_limit
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ConfigError(f"metric option retain_limit must be a non-negative integer or None, got {limit!r}")

    @staticmethod
    def coerce(options: MetricOptions | Mapping[str, Any] | None) -> MetricOptions:
        """``options`` as `MetricOptions`; a mapping with an unknown key raises `ConfigError` naming the valid ones."""
        if options is None:
            return MetricOptions()
        if isinstance(options, MetricOptions):
            return options
        valid = [f.name for f in fields(MetricOptions)]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown metric option {', '.join(map(repr, unknown))}; valid options: {', '.join(valid)}"
            )
        return MetricOptions(**options)


class Metric(ABC):
    """Base class of streamed metrics (see the module docstring for the contract).

    Class attributes: ``name`` (the record key), ``unit``, ``higher_is_better`` (``None`` = closer to the
    retrained model), ``summary`` (one line for ``unlearnkit list metrics``), ``section`` (of evaluation.md),
    ``default`` (in the default suite), ``needs``, ``needs_reference``, ``classwise_only`` and ``gap``.
    """

    name: ClassVar[str]
    unit: ClassVar[str] = "%"
    higher_is_better: ClassVar[bool | None] = None
    summary: ClassVar[str] = ""
    section: ClassVar[str] = ""
    default: ClassVar[bool] = False
    needs: ClassVar[frozenset[str]] = frozenset()
    needs_reference: ClassVar[bool] = False
    classwise_only: ClassVar[bool] = False
    gap: ClassVar[bool] = True

    def __init__(self, options: MetricOptions | Mapping[str, Any] | None = None) -> None:
        self.options = MetricOptions.coerce(options)
        self.reset()

    @classmethod
    def info(cls) -> MetricInfo:
        return MetricInfo(cls.name, cls.unit, cls.higher_is_better, cls.default, cls.section, cls.summary, gap=cls.gap)

    @abstractmethod
    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        """Consume one batch of ``split``; ``ref`` is the retrained model's batch on the same samples."""

    @abstractmethod
    def compute(self) -> dict[str, Any]:
        """``{key: value}``; keys ending in ``_degenerate`` are diagnostics, not metrics."""

    @abstractmethod
    def reset(self) -> None:
        """Forget all accumulated state."""


METRICS: Registry[type[Metric]] = Registry("metric")


def register_metric(cls: type[Metric]) -> type[Metric]:
    METRICS.register(cls.name)(cls)
    return cls


# ----------------------------------------------------------- derived keys (written by the suite and the record)
DERIVED_KEYS: tuple[MetricInfo, ...] = (
    MetricInfo(
        "avg_gap_to_retrained",
        "pp",
        False,
        True,
        "1.5",
        "Avg. Gap: mean |Δ| to retrained of FA, RA, TA, MIA",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "tow_to_retrained",
        "-",
        True,
        False,
        "1.8",
        "ToW: Π(1 − |Δ|) of FA, RA, TA as fractions",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "runtime_seconds",
        "s",
        False,
        True,
        "1.7",
        "wall-clock of the unlearning run (from the runner)",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "runtime_setup_seconds",
        "s",
        False,
        True,
        "1.7",
        "preprocessing part of the runtime (from the runner)",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "runtime_update_seconds",
        "s",
        False,
        True,
        "1.7",
        "update part of the runtime (from the runner)",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "speedup_vs_retrained",
        "×",
        True,
        True,
        "1.7",
        "runtime(retrained) / runtime(method)",
        kind="derived",
        gap=False,
    ),
    MetricInfo(
        "noise_floor_avg_gap",
        "pp",
        None,
        False,
        "7",
        "Avg. Gap between two retrained models of different seeds",
        kind="derived",
        gap=False,
    ),
)
