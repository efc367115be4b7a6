"""Metric classes: each declares what it needs and streams batches of one shared forward pass.

Accuracy (§1.1), membership-inference attacks (§1.4), divergence to the retrained model and the metrics of
manipulated data (§4.5, §5). The contract they follow (`Metric`, `Outputs`, `MetricOptions`, the registry and
the evaluation splits) lives in `unlearnkit.evaluation.metric_base` and is re-exported here.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError
from . import functional as F
from . import mia
from .metric_base import (
    AVG_GAP_BASE,
    DERIVED_KEYS,
    EVAL_SPLITS,
    METRICS,
    MIA_FLAVOURS,
    Metric,
    MetricInfo,
    MetricOptions,
    Outputs,
    register_metric,
)

__all__ = [
    "AVG_GAP_BASE",
    "DERIVED_KEYS",
    "EVAL_SPLITS",
    "METRICS",
    "MIA_FLAVOURS",
    "Metric",
    "MetricInfo",
    "MetricOptions",
    "Outputs",
    "register_metric",
]


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

    name = "accuracy_forget"
    summary = "FA: accuracy on the forget set"
    section = "1.1"
    default = True
    split = "forget"
    needs = frozenset({"forget"})


@register_metric
class ErrorForget(_Accuracy):
    """UA = 100 − FA (§1.1)."""

    name = "error_forget"
    summary = "UA = 100 − FA (derived)"
    section = "1.1"
    default = True
    split = "forget"
    needs = frozenset({"forget"})
    complement = True


@register_metric
class AccuracyRetain(_Accuracy):
    """RA: accuracy on the whole retain set (§1.2)."""

    name = "accuracy_retain"
    higher_is_better = True
    summary = "RA: accuracy on the retain set"
    section = "1.2"
    default = True
    split = "retain"
    needs = frozenset({"retain"})


@register_metric
class AccuracyTest(_Accuracy):
    """TA: accuracy on the test set; class-wise: on test images of the remaining classes (§1.3)."""

    name = "accuracy_test"
    higher_is_better = True
    summary = "TA: accuracy on test (remaining classes when class-wise)"
    section = "1.3"
    default = True
    split = "test"
    needs = frozenset({"test"})


@register_metric
class AccuracyTestForgottenClasses(_Accuracy):
    """Accuracy on test images of the forgotten classes (class-wise only, §1.3); Retrain gives ≈ 0."""

    name = "accuracy_test_forgotten_classes"
    summary = "accuracy on test images of the forgotten classes (class-wise)"
    section = "1.3"
    default = True
    split = "test_forgotten_classes"
    needs = frozenset({"test_forgotten_classes"})
    classwise_only = True


@register_metric
class PerClassAccuracyTest(Metric):
    """Test accuracy of every class (a list indexed by class; class-wise runs), for the report's per-class plot.

    Reads the test images of the remaining classes and of the forgotten ones, so the list covers the whole
    test set; a class without test images gets ``nan``. No gap is reported (the scalar metrics carry it).
    """

    name = "per_class_accuracy_test"
    summary = "test accuracy per class (list; class-wise)"
    section = "1.3"
    default = True
    needs = frozenset({"test", "test_forgotten_classes"})
    classwise_only = True
    gap = False

    def reset(self) -> None:
        self.correct: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split not in self.needs:
            return
        k = out.logits.shape[1]
        if self.correct is None or self.count is None:
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

    @abstractmethod
    def feature(self, out: Outputs) -> np.ndarray:
        """The per-sample attack feature of one batch."""

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split in self.parts:
            self.parts[split].append(self.feature(out))

    def arrays(self) -> dict[str, np.ndarray]:
        return {s: (np.concatenate(v) if v else np.zeros(0)) for s, v in self.parts.items()}


class _SvcEfficacy(_PerSample):
    """MIA-Efficacy with the Sparse/SalUn SVC (§1.4) on the feature of `feature`."""

    section = "1.4"
    needs = frozenset({"retain", "test", "forget"})

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        # only the first |test| retain samples are shadow members; stop storing once enough are held
        limit = self.options.retain_limit
        if split == "retain" and limit is not None and sum(len(a) for a in self.parts["retain"]) >= limit:
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

    name = "mia_efficacy_forget"
    summary = "MIA-Efficacy: SVC(C=3, rbf) on confidence, % of forget predicted non-member"
    default = True

    def feature(self, out: Outputs) -> np.ndarray:
        return F.confidence(out.logits, out.labels)


@register_metric
class MiaEfficacyForgetCorrectness(_SvcEfficacy):
    """SVC MIA-Efficacy on the correctness feature (§1.4)."""

    name = "mia_efficacy_forget_correctness"
    summary = "MIA-Efficacy variant with the correctness feature"

    def feature(self, out: Outputs) -> np.ndarray:
        return F.correctness(out.logits, out.labels)


@register_metric
class MiaEfficacyForgetEntropy(_SvcEfficacy):
    """SVC MIA-Efficacy on the entropy feature (§1.4)."""

    name = "mia_efficacy_forget_entropy"
    summary = "MIA-Efficacy variant with the entropy feature"

    def feature(self, out: Outputs) -> np.ndarray:
        return F.entropy(F.softmax(out.logits, dtype=np.float32))


@register_metric
class MiaEfficacyForgetMEntropy(_SvcEfficacy):
    """SVC MIA-Efficacy on the modified-entropy feature (§1.4); ``reproduce=True`` uses the published bug."""

    name = "mia_efficacy_forget_m_entropy"
    summary = "MIA-Efficacy variant with the m_entropy feature"

    def feature(self, out: Outputs) -> np.ndarray:
        p = F.softmax(out.logits, dtype=np.float32)
        if self.options.reproduce:
            return F.modified_entropy_buggy(p, out.labels)
        return F.modified_entropy(p, out.labels)


@register_metric
class MiaEfficacyForgetProb(_SvcEfficacy):
    """SVC MIA-Efficacy on the whole probability vector (§1.4)."""

    name = "mia_efficacy_forget_prob"
    summary = "MIA-Efficacy variant with the prob feature"

    def feature(self, out: Outputs) -> np.ndarray:
        return F.softmax(out.logits, dtype=np.float32)


@register_metric
class MiaPrivacyRetainTest(_PerSample):
    """SVC balanced accuracy (%) of retain-vs-test membership (``SVC_MIA_training_privacy``, §1.4)."""

    name = "mia_privacy_retain_test"
    higher_is_better = False
    summary = "training-privacy SVC MIA, balanced accuracy (→ 50)"
    section = "1.4"
    needs = frozenset({"retain", "test"})

    def feature(self, out: Outputs) -> np.ndarray:
        return F.confidence(out.logits, out.labels)

    def compute(self) -> dict[str, Any]:
        a = self.arrays()
        r = mia.mia_privacy_svc(a["retain"], a["test"])
        return {self.name: r["mia_privacy"], f"{self.name}_degenerate": r["degenerate_features"]}


@register_metric
class MiaMemberRateEntropyLogreg(_PerSample):
    """SFR-on's MIA (§1.4b): logistic regression on entropy, % of forget labelled member."""

    name = "mia_member_rate_forget_entropy_logreg"
    summary = "SFR-on MIA: logistic regression on entropy, % of forget predicted member"
    section = "1.4b"
    default = True
    needs = frozenset({"retain", "test", "forget"})

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
    unit = "nats"
    higher_is_better = False
    section = "1.6"
    needs_reference = True
    gap = False
    split: ClassVar[str]

    @abstractmethod
    def divergence(self, ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Per-sample divergence of the model from the retrained model."""

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
        self.total += float(self.divergence(ref.logits, out.logits).sum())
        self.count += len(out.labels)

    def compute(self) -> dict[str, Any]:
        return {self.name: self.total / self.count if self.count else float("nan")}


@register_metric
class KlToRetrainedForget(_Divergence):
    """Mean ``KL(p_retrained ‖ p_model)`` over the forget set, nats (SFR-on's DKL, §1.6)."""

    name = "kl_to_retrained_forget"
    summary = "DKL: KL(retrained ‖ model) on forget, mean over samples"
    default = True
    split = "forget"
    needs = frozenset({"forget"})

    def divergence(self, ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return F.kl_divergence(ref_logits, logits)


@register_metric
class JsToRetrainedForget(_Divergence):
    """Mean Jensen–Shannon divergence to the retrained model over the forget set, nats (§1.6)."""

    name = "js_to_retrained_forget"
    summary = "JS divergence to retrained on forget"
    default = True
    split = "forget"
    needs = frozenset({"forget"})

    def divergence(self, ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return F.js_divergence(ref_logits, logits)


@register_metric
class KlToRetrainedTest(_Divergence):
    """Mean ``KL(p_retrained ‖ p_model)`` over the test set used for TA (§1.6, library extension)."""

    name = "kl_to_retrained_test"
    summary = "KL(retrained ‖ model) on test"
    split = "test"
    needs = frozenset({"test"})

    def divergence(self, ref_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return F.kl_divergence(ref_logits, logits)


# ------------------------------------------------------------- manipulated data (backdoor §5, confusion §4.5)
@register_metric
class AsrTest(Metric):
    """ASR (§5): % of triggered test images classified as the backdoor target, over the test images whose true
    class is not the target (``asr_include_target_class`` or ``reproduce``: over all test images, as [SPARSE])."""

    name = "asr_test"
    higher_is_better = False
    summary = "ASR: % of triggered test images (true class ≠ target) classified as the target (badnets data)"
    section = "5"
    default = True
    needs = frozenset({"test_triggered", "test_triggered_target_class"})

    def reset(self) -> None:
        self.hits = dict.fromkeys(self.needs, 0)
        self.count = dict.fromkeys(self.needs, 0)

    def update(self, split: str, out: Outputs, ref: Outputs | None = None) -> None:
        if split in self.hits:  # the labels of these sets are the target class
            self.hits[split] += int(F.correctness(out.logits, out.labels).sum())
            self.count[split] += len(out.labels)

    def compute(self) -> dict[str, Any]:
        parts = ["test_triggered"]
        if self.options.asr_include_target_class or self.options.reproduce:
            parts.append("test_triggered_target_class")
        n = sum(self.count[s] for s in parts)
        return {self.name: 100.0 * sum(self.hits[s] for s in parts) / n if n else float("nan")}


@register_metric
class IcConfusionTest(_Accuracy):
    """IC test (§4.5): ``100 · (cm[a,b] + cm[b,a]) / (n_a + n_b)`` on the clean test images of the swapped pair."""

    name = "ic_confusion_test"
    summary = "IC test: % of clean test images of the swapped pair predicted as the other class (confusion data)"
    section = "4.5"
    default = True
    split = "test_pair_swapped"  # labelled with the other class of the pair
    needs = frozenset({"test_pair_swapped"})


@register_metric
class MemorisedManipulated(_Accuracy):
    """% of all manipulated training samples predicted as their manipulated label, known to the defender or not
    (IC_memorised of §4.5; for badnets the share of poisoned training images still mapped to the target, §5)."""

    name = "memorised_manipulated"
    summary = "% of the whole manipulated training set predicted as its manipulated label (manipulated data)"
    section = "4.5"
    default = True
    split = "manipulated"
    needs = frozenset({"manipulated"})
