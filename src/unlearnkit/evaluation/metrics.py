"""Metric classes: each declares what it needs and streams batches of one shared forward pass.

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
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from ..registry import Registry
from . import functional as F
from . import mia

__all__ = ["KEY_META", "METRICS", "EVAL_SPLITS", "Metric", "MetricInfo", "Outputs", "register_metric"]

EVAL_SPLITS = ("forget", "retain", "test", "test_forgotten_classes")


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


# key -> MetricInfo, for every key any metric, derived quantity or audit can write
KEY_META: dict[str, MetricInfo] = {}


def _meta(name: str, unit: str, hib: bool | None, default: bool, section: str, summary: str = "",
          kind: str = "metric", gap: bool = True) -> None:
    KEY_META[name] = MetricInfo(name, unit, hib, default, section, summary, kind, gap)


class Metric(ABC):
    """Base class of streamed metrics (see the module docstring for the contract)."""

    name: ClassVar[str]
    unit: ClassVar[str] = "%"
    higher_is_better: ClassVar[bool | None] = None
    needs: ClassVar[frozenset[str]] = frozenset()
    needs_reference: ClassVar[bool] = False
    default: ClassVar[bool] = False
    section: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    classwise_only: ClassVar[bool] = False
    gap: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.reset()

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
    _meta(cls.name, cls.unit, cls.higher_is_better, cls.default, cls.section, cls.summary, gap=cls.gap)
    return cls


# ------------------------------------------------------------------------------------------ accuracy
class _Accuracy(Metric):
    split: ClassVar[str]
    complement: ClassVar[bool] = False

    def reset(self) -> None:
        self.correct = 0
        self.count = 0

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split == self.split:
            self.correct += int(F.correctness(out.logits, out.labels).sum())
            self.count += len(out.labels)

    def compute(self) -> dict[str, Any]:
        acc = 100.0 * self.correct / self.count if self.count else float("nan")
        return {self.name: 100.0 - acc if self.complement else acc}


@register_metric
class AccuracyForget(_Accuracy):
    """FA: top-1 accuracy on the forget set with its true labels (§1.1)."""

    name, split, needs, default, section = "accuracy_forget", "forget", frozenset({"forget"}), True, "1.1"
    summary = "FA: accuracy on the forget set"


@register_metric
class ErrorForget(_Accuracy):
    """UA = 100 − FA (§1.1)."""

    name, split, needs, default, section = "error_forget", "forget", frozenset({"forget"}), True, "1.1"
    complement = True
    summary = "UA = 100 − FA (derived)"


@register_metric
class AccuracyRetain(_Accuracy):
    """RA: accuracy on the whole retain set (§1.2)."""

    name, split, needs, default, section = "accuracy_retain", "retain", frozenset({"retain"}), True, "1.2"
    higher_is_better = True
    summary = "RA: accuracy on the retain set"


@register_metric
class AccuracyTest(_Accuracy):
    """TA: accuracy on the test set; class-wise: on test images of the remaining classes (§1.3)."""

    name, split, needs, default, section = "accuracy_test", "test", frozenset({"test"}), True, "1.3"
    higher_is_better = True
    summary = "TA: accuracy on test (remaining classes when class-wise)"


@register_metric
class AccuracyTestForgottenClasses(_Accuracy):
    """Accuracy on test images of the forgotten classes (class-wise only, §1.3); Retrain gives ≈ 0."""

    name, split, default, section = "accuracy_test_forgotten_classes", "test_forgotten_classes", True, "1.3"
    needs = frozenset({"test_forgotten_classes"})
    classwise_only = True
    summary = "accuracy on test images of the forgotten classes (class-wise)"


@register_metric
class PerClassAccuracyTest(Metric):
    """Test accuracy of every class (a list indexed by class; class-wise runs), for the report's per-class plot.

    Reads the test images of the remaining classes and of the forgotten ones, so the list covers the whole
    test set; a class without test images gets ``nan``. No gap is reported (the scalar metrics carry it).
    """

    name, needs, default, section = "per_class_accuracy_test", frozenset({"test", "test_forgotten_classes"}), True, \
        "1.3"
    classwise_only = True
    gap = False
    summary = "test accuracy per class (list; class-wise)"

    def reset(self) -> None:
        self.correct: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split not in self.needs:
            return
        k = out.logits.shape[1]
        if self.correct is None:
            self.correct, self.count = np.zeros(k, np.int64), np.zeros(k, np.int64)
        ok = F.correctness(out.logits, out.labels)
        self.correct += np.bincount(out.labels, weights=ok, minlength=k)[:k].astype(np.int64)
        self.count += np.bincount(out.labels, minlength=k)[:k]

    def compute(self) -> dict[str, Any]:
        if self.correct is None or self.count is None:
            return {self.name: []}
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = 100.0 * self.correct / self.count
        return {self.name: [float(a) for a in acc]}


# -------------------------------------------------------------------------------------------- MIAs
class _PerSample(Metric):
    """Collects one per-sample feature per split (in order) and computes from the arrays."""

    def reset(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {s: [] for s in self.needs}

    def feature(self, out: Outputs) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split in self.parts:
            self.parts[split].append(self.feature(out))

    def arrays(self) -> dict[str, np.ndarray]:
        return {s: (np.concatenate(v) if v else np.zeros(0)) for s, v in self.parts.items()}


class _SvcEfficacy(_PerSample):
    """MIA-Efficacy with the Sparse/SalUn SVC (§1.4) on one feature."""

    needs = frozenset({"retain", "test", "forget"})
    variant: ClassVar[str] = "confidence"

    def feature(self, out: Outputs) -> np.ndarray:
        v = self.variant
        if v == "confidence":
            return F.confidence(out.logits, out.labels)
        if v == "correctness":
            return F.correctness(out.logits, out.labels)
        p = F.softmax(out.logits, dtype=np.float32)
        if v == "entropy":
            return F.entropy(p)
        if v == "m_entropy":
            if self.options.get("reproduce", False):
                return F.modified_entropy_buggy(p, out.labels)
            return F.modified_entropy(p, out.labels)
        return p  # prob: the whole probability vector

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        # only the first |test| retain samples are shadow members; stop storing once enough are held
        if split == "retain" and self.options.get("retain_limit") is not None:
            held = sum(len(a) for a in self.parts["retain"])
            if held >= self.options["retain_limit"]:
                return
        super().update(split, out, ref)

    def compute(self) -> dict[str, Any]:
        a = self.arrays()
        if len(a["forget"]) == 0 or len(a["test"]) == 0 or len(a["retain"]) == 0:
            return {self.name: float("nan")}
        r = mia.mia_efficacy_svc(a["retain"], a["test"], a["forget"])
        return {self.name: r["mia_efficacy"], f"{self.name}_degenerate": r["degenerate_features"]}


@register_metric
class MiaEfficacyForget(_SvcEfficacy):
    """MIA-Efficacy (Sparse/SalUn, §1.4): SVC on the true-label confidence, % of forget labelled non-member."""

    name, default, section = "mia_efficacy_forget", True, "1.4"
    summary = "MIA-Efficacy: SVC(C=3, rbf) on confidence, % of forget predicted non-member"


for _v in ("correctness", "entropy", "m_entropy", "prob"):
    register_metric(type(f"MiaEfficacyForget_{_v}", (_SvcEfficacy,), {
        "name": f"mia_efficacy_forget_{_v}", "variant": _v, "section": "1.4",
        "summary": f"MIA-Efficacy variant with the {_v} feature", "__doc__": f"SVC MIA-Efficacy on the {_v} feature."}))


@register_metric
class MiaPrivacyRetainTest(_PerSample):
    """SVC balanced accuracy (%) of retain-vs-test membership (``SVC_MIA_training_privacy``, §1.4)."""

    name, needs, section, higher_is_better = "mia_privacy_retain_test", frozenset({"retain", "test"}), "1.4", False
    summary = "training-privacy SVC MIA, balanced accuracy (→ 50)"

    def feature(self, out: Outputs) -> np.ndarray:
        return F.confidence(out.logits, out.labels)

    def compute(self) -> dict[str, Any]:
        a = self.arrays()
        r = mia.mia_privacy_svc(a["retain"], a["test"])
        return {self.name: r["mia_privacy"], f"{self.name}_degenerate": r["degenerate_features"]}


@register_metric
class MiaMemberRateEntropyLogreg(_PerSample):
    """SFR-on's MIA (§1.4b): logistic regression on entropy, % of forget labelled member."""

    name, needs, default, section = "mia_member_rate_forget_entropy_logreg", frozenset({"retain", "test", "forget"}), \
        True, "1.4b"
    summary = "SFR-on MIA: logistic regression on entropy, % of forget predicted member"

    def feature(self, out: Outputs) -> np.ndarray:
        return F.entropy(F.softmax(out.logits, dtype=np.float32))

    def compute(self) -> dict[str, Any]:
        a = self.arrays()
        if min(len(v) for v in a.values()) == 0:
            return {self.name: float("nan")}
        r = mia.mia_entropy_logreg(a["retain"], a["test"], a["forget"])
        return {self.name: r["member_rate"], f"{self.name}_degenerate": r["degenerate_features"]}


# ------------------------------------------------------------------------------ divergence to retrained
class _Divergence(Metric):
    needs_reference = True
    higher_is_better = False
    unit = "nats"
    gap = False
    split: ClassVar[str]
    fn: ClassVar[str]

    def reset(self) -> None:
        self.total = 0.0
        self.count = 0

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split != self.split:
            return
        if ref is None:
            raise ConfigError(f"{self.name} needs the retrained model's outputs on {split}")
        if len(ref.labels) != len(out.labels):
            raise ConfigError(f"{self.name}: reference batch has {len(ref.labels)} samples, expected {len(out.labels)}")
        fn = F.kl_divergence if self.fn == "kl" else F.js_divergence
        self.total += float(fn(ref.logits, out.logits).sum())
        self.count += len(out.labels)

    def compute(self) -> dict[str, Any]:
        return {self.name: self.total / self.count if self.count else float("nan")}


@register_metric
class KlToRetrainedForget(_Divergence):
    """Mean ``KL(p_retrained ‖ p_model)`` over the forget set, nats (SFR-on's DKL, §1.6)."""

    name, split, fn, needs, default, section = "kl_to_retrained_forget", "forget", "kl", frozenset({"forget"}), \
        True, "1.6"
    summary = "DKL: KL(retrained ‖ model) on forget, mean over samples"


@register_metric
class JsToRetrainedForget(_Divergence):
    """Mean Jensen–Shannon divergence to the retrained model over the forget set, nats (§1.6)."""

    name, split, fn, needs, default, section = "js_to_retrained_forget", "forget", "js", frozenset({"forget"}), \
        True, "1.6"
    summary = "JS divergence to retrained on forget"


@register_metric
class KlToRetrainedTest(_Divergence):
    """Mean ``KL(p_retrained ‖ p_model)`` over the test set used for TA (§1.6, library extension)."""

    name, split, fn, needs, section = "kl_to_retrained_test", "test", "kl", frozenset({"test"}), "1.6"
    summary = "KL(retrained ‖ model) on test"


# --------------------------------------------------------------- derived keys (computed by the suite)
_meta("avg_gap_to_retrained", "pp", False, True, "1.5", "Avg. Gap: mean |Δ| to retrained of FA, RA, TA, MIA",
      kind="derived", gap=False)
_meta("tow_to_retrained", "-", True, False, "1.8", "ToW: Π(1 − |Δ|) of FA, RA, TA as fractions", kind="derived",
      gap=False)
_meta("runtime_seconds", "s", False, True, "1.7", "wall-clock of the unlearning run (from the runner)",
      kind="derived", gap=False)
_meta("runtime_setup_seconds", "s", False, True, "1.7", "preprocessing part of the runtime", kind="derived", gap=False)
_meta("runtime_update_seconds", "s", False, True, "1.7", "update part of the runtime", kind="derived", gap=False)
_meta("speedup_vs_retrained", "×", True, True, "1.7", "runtime(retrained) / runtime(method)", kind="derived",
      gap=False)
_meta("noise_floor_avg_gap", "pp", None, False, "7", "Avg. Gap between two retrained models of different seeds",
      kind="derived", gap=False)


def metric_infos() -> dict[str, MetricInfo]:
    """Every registered key (metrics, derived quantities and audit outputs)."""
    from . import audits  # noqa: F401 - registers the audit keys

    return dict(KEY_META)

