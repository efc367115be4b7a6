"""The library never prints or prompts: outside the CLI package, no call of ``print`` or ``input`` (ast-based, so
comments, strings and method calls such as ``console.print`` do not count). Also two shape rules of issue 23:
`evaluate` takes at most 8 parameters, and nothing dispatches through ``globals()``."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "unlearnkit"


def _calls(path: Path, root: Path) -> list[str]:
    """``file:line name()`` of every call of the builtins ``print`` and ``input`` in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("print", "input")
    ]


def test_no_print_or_input_outside_the_cli() -> None:
    files = [p for p in sorted(SRC.rglob("*.py")) if not p.is_relative_to(SRC / "cli")]
    assert len(files) > 50  # the walk sees the package
    found = [hit for p in files for hit in _calls(p, SRC)]
    assert found == [], "the library prints or prompts (return values or events instead):\n" + "\n".join(found)


def test_the_check_sees_a_print_and_an_input(tmp_path: Path) -> None:
    """Guard against a check that finds nothing: builtin calls are caught, a method named print is not."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\nprint('x', file=sys.stderr)\nanswer = input('? ')\nconsole.print('ok')\n")
    assert _calls(probe, tmp_path) == ["probe.py:2 print()", "probe.py:3 input()"]


def test_evaluate_takes_at_most_eight_parameters_and_no_module_dispatches_by_globals() -> None:
    """`evaluate` reads what was run from `RunInfo` and how to evaluate from `EvalOptions` (issue 23), and no
    module looks names up in ``globals()`` (the CLI dispatches by its `VERBS` table)."""
    import inspect

    from unlearnkit.cli import VERBS
    from unlearnkit.evaluation import evaluate

    assert len(inspect.signature(evaluate).parameters) <= 8
    uses = [
        f"{p.relative_to(SRC)}:{node.lineno}"
        for p in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "globals"
    ]
    assert uses == []
    assert {"run", "train", "request", "unlearn"} <= set(VERBS)
