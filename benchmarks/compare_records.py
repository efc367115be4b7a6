"""Compare two bench folders run by two versions of the code: are the records the same?

Runs are matched by (dataset, model, forget spec, method, seed). For each pair the script compares every
numeric metric of every model role (unlearned, original, retrained, …) and the gaps, ignoring wall-clock
timings, and says whether the unlearned model's weights are bit-identical (same SHA-256).

    python benchmarks/compare_records.py runs/parity-before runs/parity-after [--tol 1e-6]

Exit code 0 when every metric agrees within the tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

#: Keys that measure time or identify a run, not the model's behaviour.
IGNORED = ("runtime", "speedup", "seconds", "created", "run_id", "git_sha", "wall")


def load(folder: Path) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for line in (folder / "records.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        key = (r["task"]["dataset"], r["model"]["arch"], r["task"]["forget"]["spec"], r["method"]["name"], r["seed"])
        out[key] = r
    return out


def numeric_leaves(node: Any, prefix: str = "") -> dict[str, float]:
    leaves: dict[str, float] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            if not any(word in k for word in IGNORED):
                leaves.update(numeric_leaves(v, f"{prefix}{k}."))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            leaves.update(numeric_leaves(v, f"{prefix}{i}."))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        leaves[prefix.rstrip(".")] = float(node)
    return leaves


def compare(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, list[str]]:
    la = numeric_leaves({"models": a["models"], "gaps": a.get("gaps_to_retrained", {})})
    lb = numeric_leaves({"models": b["models"], "gaps": b.get("gaps_to_retrained", {})})
    worst, problems = 0.0, []
    for k in sorted(set(la) | set(lb)):
        if k not in la or k not in lb:
            problems.append(f"{k}: only in {'before' if k in la else 'after'}")
            continue
        x, y = la[k], lb[k]
        d = 0.0 if (math.isnan(x) and math.isnan(y)) else abs(x - y)
        worst = max(worst, d)
    return worst, problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--tol", type=float, default=1e-6, help="largest allowed absolute difference of a metric")
    args = p.parse_args(argv)
    before, after = load(args.before), load(args.after)
    ok = True
    print("| dataset | model | forget | method | seed | unlearned weights | max abs metric diff | verdict |")
    print("|---|---|---|---|--:|---|--:|---|")
    for key in sorted(set(before) | set(after), key=str):
        if key not in before or key not in after:
            print(f"| {' | '.join(map(str, key))} | – | – | missing in {'after' if key in before else 'before'} |")
            ok = False
            continue
        a, b = before[key], after[key]
        same_weights = a["models"]["unlearned"].get("sha256") == b["models"]["unlearned"].get("sha256")
        worst, problems = compare(a, b)
        good = worst <= args.tol and not problems
        ok &= good
        verdict = "same" if good else ("DIFFERENT: " + "; ".join(problems[:3]) if problems else "DIFFERENT")
        print(
            f"| {' | '.join(map(str, key))} | {'bit-identical' if same_weights else 'differ'} | {worst:.2e} "
            f"| {verdict} |"
        )
    print(
        f"\n{len(set(before) & set(after))} runs compared; {'all equal' if ok else 'NOT all equal'} "
        f"(tolerance {args.tol:g})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
