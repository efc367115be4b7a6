"""The outcome of a run, measured against its input: no silent no-op, no silent wreck (issue 24 item 7).

Every run through `unlearnkit.runner.run_method` gets one of four outcomes, stated in ``RunResult.outcome``
and in the record:

* ``no_op``: the returned weights are (nearly) the input's (relative L2 change under `NO_OP_CHANGE`), e.g. a
  retain guard or a rollback restored the start, or the method found nothing to do;
* ``wrecked``: retain accuracy (a sample of up to 1,024 retain images; the held-out images of the kept classes
  for methods that must not read the retain set) fell more than `WRECK_MARGIN` points under the input's;
* ``partial``: the method says it stopped before reaching its goal (``ctx.report["reached_target"] is False``,
  e.g. the retain watch stopped it);
* ``complete``: none of these.

The checks need no retrained model and run after the timed part of the run.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

OutcomeKind = Literal["complete", "partial", "no_op", "wrecked"]
#: Relative change ‖θ_out − θ_in‖ / ‖θ_in‖ under which a run counts as a no-op.
NO_OP_CHANGE = 1e-6
#: Retain-accuracy loss (points) beyond which a run counts as wrecked.
WRECK_MARGIN = 10.0


@dataclass(frozen=True)
class Outcome:
    """What a run did to its input, measured: kind, a sentence saying why, and the numbers behind it."""

    kind: OutcomeKind
    detail: str
    weight_change: float
    retain_acc_before: float | None = None
    retain_acc_after: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.kind,
            "detail": self.detail,
            "weight_change": self.weight_change,
            "retain_acc_before": self.retain_acc_before,
            "retain_acc_after": self.retain_acc_after,
            "wreck_margin": WRECK_MARGIN,
        }


@torch.no_grad()
def relative_change(before: dict[str, torch.Tensor], after: nn.Module) -> float:
    """‖θ_out − θ_in‖ / ‖θ_in‖ over the parameters (buffers such as BatchNorm statistics, which a forward pass in
    train mode moves, do not count). A model whose deletions edit only part of it names that part with
    ``outcome_parameters()`` (a head model: its head's weights; its frozen backbone would dilute the change)."""
    num, den = 0.0, 0.0
    scope = getattr(after, "outcome_parameters", None)
    named = scope() if callable(scope) else after.named_parameters()
    for k, v in named:
        if not v.is_floating_point() or k not in before:
            continue
        a, b = before[k].double().cpu(), v.detach().double().cpu()
        if a.shape != b.shape:
            return math.inf
        num += float(((b - a) ** 2).sum())
        den += float((a**2).sum())
    if not math.isfinite(num):
        return math.inf
    return math.sqrt(num) / math.sqrt(den) if den > 0 else math.sqrt(num)


def assess(
    before: dict[str, torch.Tensor],
    output: nn.Module,
    probe: Dataset | None,
    report: dict[str, Any],
    accuracy: Any,
) -> Outcome:
    """The outcome of a run from its input weights ``before`` (a state dict) to ``output``.

    ``probe`` is the retain-accuracy sample set (None: no accuracy check); ``accuracy(model, probe)`` measures
    it; ``report`` is the method's ``ctx.report``. A method whose deletion carries a guarantee (an exact or
    certified head update, or its retrain) sets ``report["guarantee"]``: its output is retraining's stand-in, so
    a retain drop is what retraining itself costs (a head retrained with fresh noise on a small set may score
    lower) and is not judged a wreck.
    """
    change = relative_change(before, output)
    acc_in = acc_out = None
    if probe is not None and len(probe) > 0:  # type: ignore[arg-type]
        reference = copy.deepcopy(output)
        reference.load_state_dict(before)
        acc_in, acc_out = accuracy(reference, probe), accuracy(output, probe)
    reached = report.get("reached_target")
    if change < NO_OP_CHANGE:
        why = "the returned weights are the input's"
        if reached is True:
            why += " (the method found its targets already met)"
        return Outcome("no_op", why, change, acc_in, acc_out)
    guarantee = report.get("guarantee")
    if guarantee:  # exact or certified: the output stands in for retraining, whatever accuracy that costs
        return Outcome("complete", f"{guarantee}: no accuracy margin applies", change, acc_in, acc_out)
    if acc_in is not None and acc_out is not None and not acc_out >= acc_in - WRECK_MARGIN:
        return Outcome(
            "wrecked",
            f"retain accuracy fell from {acc_in:.1f}% to {acc_out:.1f}% (more than {WRECK_MARGIN:g} points)",
            change,
            acc_in,
            acc_out,
        )
    if reached is False:
        return Outcome("partial", "the method stopped before reaching its target", change, acc_in, acc_out)
    return Outcome("complete", "", change, acc_in, acc_out)


__all__ = ["NO_OP_CHANGE", "WRECK_MARGIN", "Outcome", "OutcomeKind", "assess", "relative_change"]
