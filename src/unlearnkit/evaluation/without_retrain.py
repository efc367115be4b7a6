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
    return out


__all__ = ["audit_without_retrain"]
