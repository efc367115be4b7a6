"""A method module imports the framework and the shared helpers, never another method (declared composition aside)."""

from __future__ import annotations

import ast
from pathlib import Path

METHODS_DIR = Path(__file__).resolve().parents[2] / "src" / "unlearnkit" / "methods"
FRAMEWORK = {"base", "contract", "context", "loop", "one_shot"}
#: Declared composition: SalUn is RL plus a saliency mask; SISA on a plain model is Retrain; auto drives base
#: methods and reuses SCRUB's teacher-student KL for its SCRUB base.
COMPOSITION = {("salun", "random_label"), ("sisa", "retrain"), ("auto", "scrub")}


def _sibling_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_no_method_imports_another_method() -> None:
    methods = {p.stem for p in METHODS_DIR.glob("*.py") if not p.stem.startswith("_") and p.stem not in FRAMEWORK}
    assert {"duck", "scar", "ssd", "random_label", "bad_teacher"} <= methods  # the scan sees the method files
    offenders = {
        (m, t)
        for m in methods
        for t in _sibling_imports(METHODS_DIR / f"{m}.py")
        if t in methods and (m, t) not in COMPOSITION
    }
    assert not offenders, f"method modules importing other methods: {sorted(offenders)}"
