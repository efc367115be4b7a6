"""Who a bench record is about: its (dataset, model, forget, method, label, seed) and the reference rows' names.

Shared by the report and its audits section (kept apart so neither imports the other).
"""

from __future__ import annotations

from typing import Any

ORIGINAL, RETRAINED = "Original", "Retrained (oracle)"


def dig(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def forget_text(spec: Any) -> str:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):  # {"kind": "random", "fraction": 0.1} / {"kind": "class", "classes": [0]}
        kind = spec.get("kind", "?")
        if kind == "random" and "fraction" in spec:
            return f"random:{spec['fraction']:g}"
        if kind == "class" and spec.get("classes") is not None:
            return "class:" + ",".join(str(c) for c in spec["classes"])
        return str(kind)
    return "?"


def identity(rec: dict[str, Any]) -> dict[str, Any]:
    """(dataset, model, forget, method, label, seed) of a record: its bench block, else its own fields."""
    bench = rec.get("bench")
    b: dict[str, Any] = bench if isinstance(bench, dict) else {}
    method = b.get("method") or dig(rec, "method", "name") or "?"
    margs = b.get("model_args") or {}
    model = b.get("model") or dig(rec, "model", "arch") or "?"
    if margs:
        model = f"{model}({', '.join(f'{k}={v}' for k, v in sorted(margs.items()))})"
    forget = b.get("forget") or forget_text(dig(rec, "task", "forget", "spec"))
    manipulation = b.get("manipulation") or dig(rec, "task", "manipulation", "spec")
    return {
        "dataset": b.get("dataset") or dig(rec, "task", "dataset") or "?",
        "model": model,
        "forget": f"{forget} on {manipulation}" if manipulation else forget,
        "method": method,
        "label": b.get("label") or method,
        "seed": b.get("seed", rec.get("seed")),
    }
