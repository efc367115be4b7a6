"""The pieces of the `auto` controller that need no training loop: weights, gate, targets, stop rule, snapshots.

Each piece is a small function or dataclass with its own tests (tests/methods/test_auto.py); `auto.py` wires
them into a run. Accuracies are in percent, as everywhere in the library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from ..data.datasets import ImageDataset
from ..data.loading import iter_batches

#: MUNBa's fallback weights (α_r, α_f) when the bargaining has no positive solution (its code: ``loss_r + 0.1·loss_u``).
MUNBA_FALLBACK = (1.0, 0.1)
#: MCU's three ascent weights β: forget target met / forget gap relatively smaller than the retain gap / otherwise.
MCU_BETAS = (0.0, 0.01, 0.5)


# ----------------------------------------------------------------------------------------------- weights
def munba_weights(g_rr: float, g_rf: float, g_ff: float) -> tuple[float, float, bool]:
    """MUNBa's closed-form Nash-bargaining weights ``(α_r, α_f, ok)`` from the 2×2 Gram matrix of the gradients.

    The bargaining solution solves ``G α = 1/α`` (element-wise) with ``G = [[g_rr, g_rf], [g_rf, g_ff]]``. With
    ``n_r = √g_rr``, ``n_f = √g_ff`` and ``c = g_rf / (n_r n_f)`` its two equations give
    ``α_r = 1 / (n_r √(1 + c))`` and ``α_f = 1 / (n_f √(1 + c))``: the combined direction is the bisector of the
    two unit gradients. This is the same solution as the expression in MUNBa's code
    (``α_r = √((g1 g3 − g2 √(g1 g3)) / (g1² g3 − g1 g2²))``, ``α_f = (1 − g1 α_r²) / (g2 α_r)``), written in a
    form that stays finite for orthogonal gradients (``g2 = 0``), where the code's second expression is 0/0.
    When there is no positive finite solution (a zero or non-finite gradient, or exactly opposite gradients)
    the weights are MUNBa's fallback (1, 0.1) and ``ok`` is False.
    """
    if not (g_rr > 0 and g_ff > 0 and math.isfinite(g_rr) and math.isfinite(g_ff) and math.isfinite(g_rf)):
        return (*MUNBA_FALLBACK, False)
    n_r, n_f = math.sqrt(g_rr), math.sqrt(g_ff)
    cos = max(-1.0, min(1.0, g_rf / (n_r * n_f)))
    if 1.0 + cos <= 1e-8:
        return (*MUNBA_FALLBACK, False)
    s = math.sqrt(1.0 + cos)
    return 1.0 / (n_r * s), 1.0 / (n_f * s), True


def relative_gap(value: float, target: float, floor: float = 1.0) -> float:
    """``(value − target) / max(|target|, floor)``: how far ``value`` is above its target, relative to the target."""
    return (value - target) / max(abs(target), floor)


def mcu_beta(forget_acc: float, forget_target: float, retain_acc: float, retain_target: float) -> float:
    """MCU's three-level ascent weight β (``loss = L_r + β·L_f``) from the remaining relative gaps.

    0 once forget accuracy is at or below its target; 0.01 when the relative forget gap is smaller than the
    relative retain gap (repairing retain is the more urgent); 0.5 otherwise. The relative forget gap is
    ``(FA − FA*) / max(FA*, 1)`` (MCU divides by FA*, which is 0 for a forgotten class; the floor of one point
    keeps it finite), the relative retain gap ``(RA* − RA) / max(RA*, 1)`` (retain accuracy lost).
    """
    if forget_acc <= forget_target:
        return MCU_BETAS[0]
    if relative_gap(forget_acc, forget_target) < -relative_gap(retain_acc, retain_target):
        return MCU_BETAS[1]
    return MCU_BETAS[2]


# ----------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Targets:
    """What a model that never saw the forget set would score, read off the original and held-out data.

    ``forget_acc`` is None for random requests: it is then the current model's held-out accuracy with the
    forget set's class mix, re-measured at every check (SCRUB+R compares with the final model's held-out error).
    """

    kind: Literal["class", "random"]
    retain_acc: float  # the original's accuracy on the retain sample
    forget_acc: float | None  # 0 for a forgotten class; None: follow the held-out accuracy
    forget_loss: float  # chance-level loss ln K (class) or the original's class-mix held-out loss (random)
    forget_tolerance: float
    retain_tolerance: float
    mia_auc: float = 0.5
    kept_acc: float | None = None  # held-out accuracy on the kept classes (class: the original's, masked)
    kept_tolerance: float = 0.0

    def as_dict(self) -> dict[str, float | str | None]:
        return {
            "kind": self.kind,
            "retain_acc": round(self.retain_acc, 3),
            "forget_acc": None if self.forget_acc is None else round(self.forget_acc, 3),
            "forget_acc_source": "zero (class)" if self.kind == "class" else "held-out, forget class mix",
            "forget_loss": round(self.forget_loss, 4),
            "forget_tolerance": round(self.forget_tolerance, 3),
            "retain_tolerance": round(self.retain_tolerance, 3),
            "retain_acc_source": "the original's" + (", forgotten classes masked" if self.kind == "class" else ""),
            "kept_acc": None if self.kept_acc is None else round(self.kept_acc, 3),
            "kept_tolerance": round(self.kept_tolerance, 3),
            "mia_auc": self.mia_auc,
        }


def sampling_tolerance(acc: float, n: int, floor: float) -> float:
    """``max(floor, one standard error of an accuracy of acc % on n samples)``, in points."""
    p = min(max(acc / 100.0, 0.0), 1.0)
    return max(floor, 100.0 * math.sqrt(p * (1.0 - p) / max(n, 1)))


def class_mix_sample(
    holdout: ImageDataset, forget_targets: torch.Tensor, n: int, generator: torch.Generator
) -> ImageDataset:
    """Up to ``n`` held-out images drawn class by class in the forget set's class proportions (with replacement
    only where a class has fewer held-out images than its share)."""
    classes, counts = torch.unique(forget_targets, return_counts=True)
    total = int(counts.sum())
    picks = []
    for c, k in zip(classes.tolist(), counts.tolist(), strict=True):
        pool = torch.nonzero(holdout.targets == c).flatten()
        if len(pool) == 0:
            continue
        want = max(1, round(n * k / total))
        if want <= len(pool):
            picks.append(pool[torch.randperm(len(pool), generator=generator)[:want]])
        else:
            picks.append(pool[torch.randint(0, len(pool), (want,), generator=generator)])
    if not picks:
        raise ValueError("the held-out data has no image of any class of the forget set")
    return holdout.subset(torch.cat(picks).numpy())


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """Area under the ROC curve of scores ``pos`` against ``neg`` (Mann-Whitney, ties count one half)."""
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    a, b = pos.double()[:, None], neg.double()[None, :]
    return float((a > b).double().mean() + 0.5 * (a == b).double().mean())


# ------------------------------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class Measure:
    """One check of the current model on the fixed samples."""

    step: int
    forget_acc: float
    forget_loss: float
    retain_acc: float
    holdout_acc: float  # held-out accuracy with the forget set's class mix
    mia_auc: float  # population MIA: low loss means member; forget (members?) vs held-out
    kept_acc: float = math.nan  # held-out accuracy on the classes that are kept (nan: not measured)
    #: the class-mix held-out sample's losses, sorted (what `auto`'s loss match reads; not part of the record)
    holdout_losses: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 4) for k, v in self.__dict__.items() if k != "holdout_losses"}


@torch.no_grad()
def losses(model: nn.Module, ds: ImageDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    losses, correct = [], []
    for x, y in iter_batches(ds, 512, device=device):
        out = model(x).float()
        losses.append(F.cross_entropy(out, y, reduction="none").cpu())
        correct.append((out.argmax(1) == y).cpu())
    return torch.cat(losses), torch.cat(correct)


def measure(
    model: nn.Module,
    forget: ImageDataset,
    retain: ImageDataset,
    holdout: ImageDataset,
    step: int,
    device: torch.device,
    kept: ImageDataset | None = None,
) -> Measure:
    """Forget/retain/held-out accuracy, forget loss and the loss-threshold MIA AUC (eval mode, no gradients);
    with ``kept``, also the held-out accuracy on the kept classes."""
    was = model.training
    model.eval()
    lf, cf = losses(model, forget, device)
    _, cr = losses(model, retain, device)
    lh, ch = losses(model, holdout, device)
    kept_acc = 100.0 * float(losses(model, kept, device)[1].float().mean()) if kept is not None else math.nan
    model.train(was)
    # A member has a lower loss: score = −loss, forget as the "member" side; 0.5 = indistinguishable.
    return Measure(
        step=step,
        forget_acc=100.0 * float(cf.float().mean()),
        forget_loss=float(lf.mean()),
        retain_acc=100.0 * float(cr.float().mean()),
        holdout_acc=100.0 * float(ch.float().mean()),
        mia_auc=auc(-lf, -lh),
        kept_acc=kept_acc,
        holdout_losses=lh.sort().values,
    )


@torch.no_grad()
def masked_accuracy(model: nn.Module, ds: ImageDataset, classes: tuple[int, ...], device: torch.device) -> float:
    """Accuracy (%) when the ``classes`` can never be predicted (their logits masked): what the model scores on
    the kept classes once the forgotten ones are gone, without any training. Images whose label is one of
    ``classes`` count as wrong."""
    was = model.training
    model.eval()
    correct, n = 0, 0
    for x, y in iter_batches(ds, 512, device=device):
        out = model(x).float()
        if classes:
            out[:, list(classes)] = -math.inf
        correct += int((out.argmax(1) == y).sum())
        n += len(y)
    model.train(was)
    return 100.0 * correct / max(n, 1)


# ------------------------------------------------------------------------------------ distance, stop, keep
#: Weight of the MIA term (|AUC − 0.5| in points) in the distance to the targets: an extra signal, not the goal.
MIA_WEIGHT = 0.5


def forget_goal(m: Measure, t: Targets) -> float:
    return t.forget_acc if t.forget_acc is not None else m.holdout_acc


#: Weight of a retain point lost, against a forget point off target, in the distance.
RETAIN_WEIGHT = 2.0
#: Weight of a held-out point (kept classes) lost: the same harm as a retain point, measured where the model
#: never trained.
KEPT_WEIGHT = 2.0
#: A state more than this many retain points under its target is never chosen (`unlearnkit.outcome`'s wreck margin).
INADMISSIBLE_DROP = 10.0


def distance(m: Measure, t: Targets) -> float:
    """How far a check is from the targets, in accuracy points: |FA − FA*| + 2·retain shortfall + ½·|AUC − ½|·100.

    Retain accuracy above its target costs nothing; below it, every point counts twice, and a state more than
    `INADMISSIBLE_DROP` points under it is infinitely far: a wrecked model is never returned, even when it
    forgot everything (the input, which has distance < inf, is preferred).
    """
    if not m.retain_acc >= t.retain_acc - INADMISSIBLE_DROP:
        return math.inf
    return (
        abs(m.forget_acc - forget_goal(m, t))
        + RETAIN_WEIGHT * max(0.0, t.retain_acc - m.retain_acc)
        + KEPT_WEIGHT * _kept_shortfall(m, t)
        + MIA_WEIGHT * 100.0 * abs(m.mia_auc - t.mia_auc)
    )


def _kept_shortfall(m: Measure, t: Targets) -> float:
    if t.kept_acc is None or math.isnan(m.kept_acc):
        return 0.0
    return max(0.0, t.kept_acc - m.kept_acc)


def on_target(m: Measure, t: Targets) -> bool:
    """Forget accuracy within tolerance of its goal AND retain accuracy within tolerance of its target AND (when
    measured) held-out accuracy on the kept classes within tolerance of its target."""
    return (
        abs(m.forget_acc - forget_goal(m, t)) <= t.forget_tolerance
        and m.retain_acc >= t.retain_acc - t.retain_tolerance
        and _kept_shortfall(m, t) <= t.kept_tolerance
    )


@dataclass
class StopRule:
    """When the run ends: targets met, retain damage that further steps cannot avoid, or retain collapse.

    * ``targets``: `on_target` (forget and retain side) at a check;
    * ``retain_collapse``: retain accuracy more than ``collapse_margin`` points under its target;
    * ``no_progress``: ``patience`` checks in a row without a better distance while retain accuracy is under
      its target: every further forget step costs retain accuracy that the repair steps do not win back.
    """

    patience: int = 6
    collapse_margin: float = 20.0
    best: float = math.inf
    since_best: int = 0

    def update(self, m: Measure, t: Targets) -> str | None:
        d = distance(m, t)
        if d < self.best - 1e-9:
            self.best, self.since_best = d, 0
        else:
            self.since_best += 1
        if on_target(m, t):
            return "targets"
        if m.retain_acc < t.retain_acc - self.collapse_margin:
            return "retain_collapse"
        if self.since_best >= self.patience and m.retain_acc < t.retain_acc - t.retain_tolerance:
            return "no_progress"
        return None


@dataclass
class Snapshots:
    """Cheap in-memory snapshots: keeps the state closest to the targets seen so far (SCRUB+R's rewind).

    Keeping only the best is the same choice as keeping every snapshot and choosing at the end; ties keep
    the earlier state (fewer edits). ``trace`` holds every check for the record.
    """

    best_distance: float = math.inf
    best_step: int = -1
    state: dict[str, torch.Tensor] | None = None
    trace: list[Measure] = field(default_factory=list)

    def offer(self, model: nn.Module, m: Measure, t: Targets) -> bool:
        self.trace.append(m)
        d = distance(m, t)
        if d < self.best_distance - 1e-9:
            self.best_distance, self.best_step = d, m.step
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return True
        return False

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


__all__ = [
    "MCU_BETAS",
    "MUNBA_FALLBACK",
    "Measure",
    "Snapshots",
    "StopRule",
    "Targets",
    "auc",
    "class_mix_sample",
    "distance",
    "losses",
    "masked_accuracy",
    "mcu_beta",
    "measure",
    "munba_weights",
    "on_target",
    "sampling_tolerance",
]
