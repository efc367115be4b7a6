"""The report's tables as text: markdown, CSV, the aggregates JSON and the time table."""

from __future__ import annotations

import csv
import io
from typing import Any

from .aggregate import _num
from .audit_report import markdown as audit_markdown
from .scenario import COLUMNS, GAP_KEYS, MANIPULATION_KEYS, Column, Row, Scenario


# ----------------------------------------------------------------------------------------- tables
def _fmt(s: dict[str, Any] | None, col: Column) -> str:
    if s is None:
        return "–"
    d = col.decimals
    text = f"{s['mean']:.{d}f}"
    if s.get("std") is not None:
        text += f" ± {s['std']:.{d}f}"
    return text + col.suffix


def cell(row: Row, col: Column) -> str:
    """The printed cell of ``row`` in ``col`` (mean ± std, gap in parentheses, † when within the noise floor)."""
    text = _fmt(row.metrics.get(col.key), col)
    g = row.gaps.get(col.key) if col.gap else None
    if g is not None and text != "–":
        text += f" ({g['mean']:.{col.decimals}f})"
    if col.key == "avg_gap_to_retrained" and within_floor(row):
        text += " †"
    return text


def within_floor(row: Row) -> bool:
    gap, floor = row.metrics.get("avg_gap_to_retrained"), row.metrics.get("noise_floor_avg_gap")
    return bool(gap and floor and gap["mean"] <= floor["mean"])


def table_rows(sc: Scenario) -> tuple[list[str], list[dict[str, Any]]]:
    """Headers and rows (``{"label", "kind", "n", "cells"}``) of one scenario's table."""
    cols = [c for c in COLUMNS if c.key not in MANIPULATION_KEYS or any(r.metrics.get(c.key) for r in sc.rows)]
    headers = ["Method", "n", *[c.header for c in cols]]
    rows = [{"label": r.label, "kind": r.kind, "n": len(r.seeds), "cells": [cell(r, c) for c in cols]} for r in sc.rows]
    return headers, rows


def footnotes(sc: Scenario) -> list[str]:
    seeds = sorted({s for r in sc.rows for s in r.seeds}, key=str)
    floor = next((r.metrics.get("noise_floor_avg_gap") for r in sc.rows if r.metrics.get("noise_floor_avg_gap")), None)
    notes = [
        f"Cells: mean ± sample std over seeds (n per row; seeds {', '.join(map(str, seeds))}); "
        "in parentheses the mean per-seed absolute gap to the retrained model of the same seed (pp).",
        "Avg. gap: mean over seeds of the per-seed average of the four gaps (FA, RA, TA, MIA-Eff.); "
        "* Avg. gap of means: the paper-compatible gap between seed means.",
        "† the method's avg. gap is within the noise floor (avg. gap between two retrained models): "
        "indistinguishable from retraining at this sample size.",
    ]
    if floor:
        notes.append(f"Noise floor: {_fmt(floor, Column('x', 'x'))} pp.")
    else:
        notes.append("Noise floor: not in the records.")
    if sc.devices:
        notes.append(f"Device: {', '.join(sc.devices)}.")
    if sc.mia_flavours:
        notes.append(f"MIA flavour: {', '.join(sc.mia_flavours)}.")
    return notes


def markdown_tables(scenarios: list[Scenario]) -> str:
    out = ["# Benchmark tables", ""]
    for sc in scenarios:
        headers, rows = table_rows(sc)
        out += [
            f"## {sc.title}",
            "",
            "| " + " | ".join(headers) + " |",
            "|" + "|".join(["---"] + ["--:"] * (len(headers) - 1)) + "|",
        ]
        for r in rows:
            out.append("| " + " | ".join([r["label"].replace("|", "\\|"), str(r["n"]), *r["cells"]]) + " |")
        out += [""] + [f"- {n}" for n in footnotes(sc)] + [""]
        if sc.audits is not None:
            out += [audit_markdown(sc.audits, sc.classwise)]
    return "\n".join(out)


def time_table(records: list[dict[str, Any]]) -> str:
    """Markdown: where the bench's wall time went, per method label, from the records' own timings.

    Per run, ``bench.wall_seconds`` (the whole cell) splits into the method's unlearning runtime, the
    evaluation (``evaluation_timing.total_seconds``) and the rest (loading data and cached models, checks,
    writing the record).
    """
    by: dict[str, dict[str, float]] = {}
    for rec in records:
        bench = rec.get("bench") or {}
        wall = _num(bench.get("wall_seconds"))
        if wall is None:
            continue
        label = str(bench.get("label") or (rec.get("method") or {}).get("name") or "?")
        unlearn = _num((rec.get("models", {}).get("unlearned") or {}).get("runtime_seconds")) or 0.0
        ev = _num((rec.get("evaluation_timing") or {}).get("total_seconds")) or 0.0
        t = by.setdefault(label, {"n": 0, "wall": 0.0, "unlearn": 0.0, "eval": 0.0})
        t["n"] += 1
        t["wall"] += wall
        t["unlearn"] += unlearn
        t["eval"] += ev
    if not by:
        return ""
    total = sum(t["wall"] for t in by.values())
    out = [
        "## Where the time went",
        "",
        f"Sum of the recorded runs' wall time: {total:.0f} s ({total / 60:.1f} min) over "
        f"{sum(int(t['n']) for t in by.values())} runs. Per run: unlearning (the method), evaluation (default "
        "suite) and the rest (loading data and cached models, writing the record).",
        "",
        "| Method | runs | wall (s) | share | unlearning (s) | evaluation (s) | rest (s) |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for label, t in sorted(by.items(), key=lambda kv: -kv[1]["wall"]):
        rest = t["wall"] - t["unlearn"] - t["eval"]
        out.append(
            f"| {label.replace('|', chr(92) + '|')} | {int(t['n'])} | {t['wall']:.0f} | "
            f"{100 * t['wall'] / total:.0f} % | {t['unlearn']:.0f} | {t['eval']:.0f} | {rest:.0f} |"
        )
    return "\n".join([*out, ""])


def csv_table(scenarios: list[Scenario]) -> str:
    keys = [c.key for c in COLUMNS]
    header = ["dataset", "model", "forget", "row", "kind", "method", "n_seeds", "seeds"]
    for k in keys:
        header += [f"{k}_mean", f"{k}_std", f"{k}_ci95_lo", f"{k}_ci95_hi"]
    header += [f"gap_{k}_mean" for k in GAP_KEYS] + [f"gap_{k}_std" for k in GAP_KEYS]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for sc in scenarios:
        for r in sc.rows:
            line: list[Any] = [
                sc.dataset,
                sc.model,
                sc.forget,
                r.label,
                r.kind,
                r.method,
                len(r.seeds),
                " ".join(map(str, r.seeds)),
            ]
            for k in keys:
                s = r.metrics.get(k)
                line += [
                    "" if s is None else s["mean"],
                    "" if s is None or s["std"] is None else s["std"],
                    *(["", ""] if s is None or s["ci95"] is None else s["ci95"]),
                ]
            for part in ("mean", "std"):
                for k in GAP_KEYS:
                    g = r.gaps.get(k)
                    line.append("" if g is None or g[part] is None else g[part])
            w.writerow(line)
    return buf.getvalue()


def aggregates_json(scenarios: list[Scenario]) -> list[dict[str, Any]]:
    out = []
    for sc in scenarios:
        for r in sc.rows:
            metrics = {k: v for k, v in r.metrics.items() if v is not None and k != "avg_gap_of_means"}
            entry: dict[str, Any] = {
                "group": {
                    "dataset": sc.dataset,
                    "model": sc.model,
                    "forget": sc.forget,
                    "row": r.label,
                    "kind": r.kind,
                    "method": r.method,
                },
                "n_seeds": len(r.seeds),
                "seeds": r.seeds,
                "metrics": metrics,
            }
            if r.kind == "method":
                entry["gaps_to_retrained"] = {k: v for k, v in r.gaps.items() if v is not None}
                entry["avg_gap_paired"] = r.metrics.get("avg_gap_to_retrained")
                gom = r.metrics.get("avg_gap_of_means")
                entry["avg_gap_of_means"] = {"value": gom["mean"] if gom else None, "note": "paper-compatible"}
            out.append(entry)
    return out
