"""Which benchmark rows were measured before the last change to the code they use? (issue 26)

A row of a benchmark's records (``benchmarks/*.jsonl``) is **stale** when the commit it was measured on
(``package.git_sha``) comes before the last commit that changed the code behind it:

* the method's own module and the project modules of every class it inherits from (``salun`` → ``salun.py``,
  ``random_label.py``, the loop and contract modules), found through the registry;
* the method's preset file (``methods/presets/<name>.toml``) and, for SISA and weight filtering, the engine
  modules outside ``methods/`` that do their work (``sisa*.py``, ``filters*``);
* the metric code (``evaluation/metrics.py``, ``functional.py``, ``mia.py`` and the suite that combines them).

Commits listed in ``benchmarks/behaviour_preserving.txt`` (one hash per line, each with the parity evidence
that shows its records unchanged, e.g. ``benchmarks/refactor_parity.md``) do not make a row stale. Rows with
no commit (older scripts' rows) are listed as "no commit recorded". Prints a table and a one-line summary;
exits 0 whatever it finds (CI prints it; it is a report, not a gate).

    python benchmarks/stale.py                      # every benchmarks/*.jsonl
    python benchmarks/stale.py benchmarks/transfer.jsonl
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PKG = ROOT / "src" / "unlearnkit"
#: Engines that live outside methods/ (globs relative to src/unlearnkit), for the methods that drive them.
ENGINES = {"sisa": ["sisa*.py"], "weight_filtering": ["filters*.py", "filters/*.py"]}
METRIC_CODE = [
    "evaluation/metrics.py",
    "evaluation/functional.py",
    "evaluation/mia.py",
    "evaluation/suite.py",
]


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


@cache
def _exempt() -> frozenset[str]:
    path = HERE / "behaviour_preserving.txt"
    if not path.exists():
        return frozenset()
    shas = [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return frozenset(_git("rev-parse", s) or s for s in shas)


@cache
def code_paths(method: str) -> tuple[str, ...]:
    """Project files (relative to the repository root) whose change can change a run of ``method``."""
    from unlearnkit.methods import METHODS

    paths = {f"src/unlearnkit/{p}" for p in METRIC_CODE}
    try:
        cls = METHODS.get(method)
        name = METHODS.canonical(method)
    except Exception:
        return tuple(sorted(paths))
    for klass in inspect.getmro(cls):
        file = inspect.getsourcefile(klass) if klass.__module__.startswith("unlearnkit") else None
        if file:
            paths.add(str(Path(file).resolve().relative_to(ROOT)))
    for pattern in ENGINES.get(name, []):
        paths.update(str(f.relative_to(ROOT)) for f in PKG.glob(pattern))
    preset = PKG / "methods" / "presets" / f"{name}.toml"
    if preset.exists():
        paths.add(str(preset.relative_to(ROOT)))
    return tuple(sorted(p for p in paths if (ROOT / p).exists()))


@cache
def last_change(paths: tuple[str, ...]) -> str:
    """The newest commit touching ``paths`` that is not listed as behaviour-preserving."""
    for sha in _git("log", "--format=%H", "--", *paths).splitlines():
        if sha not in _exempt():
            return sha
    return ""


@cache
def is_before(measured: str, change: str) -> bool | None:
    """True when ``measured`` is a strict ancestor of ``change``; None when the commit is unknown here."""
    if not _git("rev-parse", "--verify", "-q", f"{measured}^{{commit}}"):
        return None
    if measured == change:
        return False
    rc = subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "--is-ancestor", measured, change], capture_output=True, check=False
    ).returncode
    return rc == 0


def classify(record: dict[str, Any]) -> tuple[str, str]:
    """(status, detail) of one record: fresh | stale | no commit recorded | unknown commit."""
    sha = (record.get("package") or {}).get("git_sha")
    method = (record.get("method") or {}).get("name")
    if not sha:
        return "no commit recorded", ""
    if not method:
        return "fresh", ""  # a row without a method (an environment row) uses no method code
    change = last_change(code_paths(method))
    before = is_before(sha, change) if change else False
    if before is None:
        return "unknown commit", sha[:7]
    return ("stale", f"{method}: measured {sha[:7]}, code changed in {change[:7]}") if before else ("fresh", "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", type=Path, help="records files (default: benchmarks/*.jsonl)")
    args = p.parse_args(argv)
    files = args.files or sorted(HERE.glob("*.jsonl"))
    total: Counter[str] = Counter()
    print("| records | rows | fresh | stale | no commit recorded | unknown commit | first stale reason |")
    print("|---|--:|--:|--:|--:|--:|---|")
    for f in files:
        counts: Counter[str] = Counter()
        first = ""
        for line in f.read_text().splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                counts["unreadable"] += 1
                continue
            status, detail = classify(rec)
            counts[status] += 1
            first = first or (detail if status == "stale" else "")
        total.update(counts)
        rows = sum(counts.values())
        print(
            f"| {f.name} | {rows} | {counts['fresh']} | {counts['stale']} | {counts['no commit recorded']} | "
            f"{counts['unknown commit']} | {first} |"
        )
    print(
        f"\n{sum(total.values())} rows: {total['fresh']} fresh, {total['stale']} stale, "
        f"{total['no commit recorded']} without a commit, {total['unknown commit']} on commits unknown here"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
