"""An audit that needs no retrained model: for ``unlearnkit unlearn`` and the ledger's ``request apply``."""

from __future__ import annotations

from typing import Any


def audit_without_retrain(
    model: Any, bundle: Any, split: Any, *, original: Any = None, device: str = "auto"
) -> dict[str, Any]:
    """The metrics of `unlearnkit.evaluation.evaluate` with ``retrained=None``: FA, RA, TA, MIA efficacy, the
    population MIAs (forget vs held-out test AUCs), and the change from the original (prediction agreement on
    forget and test, relative weight change).
    """
    from ..device import resolve_device
    from ..training import predict_logits
    from .api import RunInfo, evaluate

    device = str(resolve_device(device))  # "auto" -> cuda or cpu: predict_logits needs a real device
    rec = evaluate(
        model, bundle, split, original=original, retrained=None, device=device, run=RunInfo(model_name="ledger")
    )
    out: dict[str, Any] = {role: m.get("metrics", {}) for role, m in rec.get("models", {}).items()}
    if original is not None:
        forget, test = bundle.train.subset(split.forget), bundle.test
        change: dict[str, float] = {}
        for name, ds in (("forget", forget), ("test", test)):
            a = predict_logits(model, ds, device=device)[0].argmax(1)
            b = predict_logits(original, ds, device=device)[0].argmax(1)
            change[f"prediction_agreement_{name}"] = float((a == b).float().mean() * 100)
        sa, sb = model.state_dict(), original.state_dict()
        num = sum(float((sa[k].float() - sb[k].float()).norm() ** 2) for k in sa if sa[k].is_floating_point())
        den = sum(float(sb[k].float().norm() ** 2) for k in sb if sb[k].is_floating_point())
        change["relative_weight_change"] = (num / max(den, 1e-12)) ** 0.5
        out["change"] = change
    out["held_out_check"] = looks_held_out(out.get("unlearned", {}), bool(getattr(split, "is_classwise", False)))
    return out


#: How far forget accuracy may sit from its held-out reference (points), and the population-MIA AUC from 0.5.
ACCURACY_TOLERANCE = 2.0
AUC_TOLERANCE = 0.05


def looks_held_out(metrics: dict[str, Any], classwise: bool) -> dict[str, Any]:
    """Does the forget set now look like data the model never saw? No retrained model needed.

    Class requests: forget accuracy at most `ACCURACY_TOLERANCE` (a model retrained without the class scores
    0). Sample requests: forget accuracy within `ACCURACY_TOLERANCE` points of the held-out test accuracy, and the
    population MIA (forget against held-out test, loss score) within `AUC_TOLERANCE` of chance (0.5).
    """
    fa = metrics.get("accuracy_forget")
    if not isinstance(fa, (int, float)):
        return {"verdict": "unknown", "why": "no forget accuracy was measured"}
    if classwise:
        ok = fa <= ACCURACY_TOLERANCE
        why = f"forget accuracy {fa:.1f}% (a model that never saw the class: 0%, tolerance {ACCURACY_TOLERANCE:g})"
        return {"verdict": "looks held out" if ok else "still remembered", "why": why, "forget_accuracy": fa}
    ta, auc = metrics.get("accuracy_test"), metrics.get("mia_auc_forget_loss")
    checks, reasons = [], []
    if isinstance(ta, (int, float)):
        checks.append(abs(fa - ta) <= ACCURACY_TOLERANCE)
        reasons.append(f"forget accuracy {fa:.1f}% vs held-out {ta:.1f}% (tolerance {ACCURACY_TOLERANCE:g})")
    if isinstance(auc, (int, float)):
        checks.append(abs(auc - 0.5) <= AUC_TOLERANCE)
        reasons.append(f"population MIA AUC {auc:.3f} (chance 0.5, tolerance {AUC_TOLERANCE:g})")
    if not checks:
        return {"verdict": "unknown", "why": "no held-out reference was measured"}
    return {
        "verdict": "looks held out" if all(checks) else "still remembered",
        "why": "; ".join(reasons),
        "forget_accuracy": fa,
        "held_out_accuracy": ta,
        "mia_auc": auc,
    }


__all__ = ["audit_without_retrain", "looks_held_out"]
