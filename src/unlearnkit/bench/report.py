"""Reports from a bench folder: pure functions of ``records.jsonl`` (no model is ever loaded).

`build_report(dir)` writes into ``dir/report/``:

* ``tables.md`` and ``tables.csv``: per (dataset, model, forget spec) one table with the rows Original,
  Retrained (oracle) and every method label; cells are mean ± std over seeds, with the mean per-seed gap to
  the retrained model in parentheses (paired gaps, evaluation.md §7);
* ``aggregates.json``: the aggregate file of evaluation.md §8.2 (mean, std, 95% t-interval, n per metric;
  ``avg_gap_paired`` and the paper-compatible ``avg_gap_of_means``);
* ``plots/*.png``: FA/RA/TA/MIA bars per method beside the retrained model, avg gap against runtime, and
  per-class test accuracy for class-wise runs whose records hold ``per_class_accuracy_test``;
* ``report.html``: one self-contained page (tables as HTML, plots as base64 PNG data URIs).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._io import write_json_atomic, write_text_atomic
from ..errors import ConfigError, MissingDependencyError
from .audit_report import audit_section, roc_figure, score_histograms
from .audit_report import markdown as audit_markdown
from .audit_report import notes as audit_notes
from .audit_report import table as audit_table
from .identity import ORIGINAL, RETRAINED, identity
from .identity import dig as _dig
from .records import RECORDS_FILE, make_readable, read_records
from .stats import summarize

GAP_KEYS = ("accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget")
MANIPULATION_KEYS = ("asr_test", "ic_confusion_test", "memorised_manipulated")


@dataclass(frozen=True)
class Column:
    """One table column: the metric key, its header, how to print it and whether a gap goes beside it."""

    key: str
    header: str
    decimals: int = 2
    suffix: str = ""
    gap: bool = False


COLUMNS = (
    Column("accuracy_forget", "FA", gap=True),
    Column("accuracy_retain", "RA", gap=True),
    Column("accuracy_test", "TA", gap=True),
    Column("asr_test", "ASR"),  # manipulated data only (a table shows these columns when a row has them)
    Column("ic_confusion_test", "IC test"),
    Column("memorised_manipulated", "Memorised"),
    Column("mia_efficacy_forget", "MIA-Eff.", gap=True),
    Column("avg_gap_to_retrained", "Avg. gap"),
    Column("avg_gap_of_means", "Avg. gap of means*", decimals=2),
    Column("kl_to_retrained_forget", "KL→Retrain", decimals=3),
    Column("runtime_seconds", "Runtime (s)", decimals=2),
    Column("speedup_vs_retrained", "Speedup", decimals=1, suffix="×"),
    Column("noise_floor_avg_gap", "Noise floor"),
)


# ----------------------------------------------------------------------------------------- record access
def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _first(*values: Any) -> float | None:
    for v in values:
        if _num(v) is not None:
            return _num(v)
    return None


def metric_value(rec: dict[str, Any], role: str, key: str) -> float | None:
    """One number of one model role ("original", "retrained", "unlearned") of a record, or None."""
    model = _dig(rec, "models", role) or {}
    found = model.get("metrics")
    metrics: dict[str, Any] = found if isinstance(found, dict) else {}
    if key == "noise_floor_avg_gap":
        return _num(rec.get("noise_floor_avg_gap"))
    if key == "avg_gap_to_retrained":
        if role != "unlearned":
            return None
        return _first(_dig(rec, "gaps_to_retrained", "avg_gap_to_retrained"), metrics.get(key))
    if key == "runtime_seconds":
        return _first(model.get("runtime_seconds"), metrics.get("runtime_seconds"))
    if key == "speedup_vs_retrained":
        if role != "unlearned":
            return None
        v = _first(metrics.get(key), model.get(key))
        if v is None:  # derived from the two recorded runtimes when the record does not state it
            rt, ut = (
                metric_value(rec, "retrained", "runtime_seconds"),
                metric_value(rec, "unlearned", "runtime_seconds"),
            )
            v = rt / ut if rt and ut else None
        return v
    if key in ("kl_to_retrained_forget",) and role != "unlearned":
        return None
    return _num(metrics.get(key))


def gap_value(rec: dict[str, Any], key: str) -> float | None:
    return _num(_dig(rec, "gaps_to_retrained", key))


def per_class(rec: dict[str, Any], role: str) -> list[float] | None:
    v = _dig(rec, "models", role, "metrics", "per_class_accuracy_test")
    if isinstance(v, list) and v and all(_num(x) is not None for x in v):
        return [float(x) for x in v]
    if isinstance(v, dict) and v:
        try:
            items = sorted((int(k), _num(x)) for k, x in v.items())
        except ValueError:
            return None
        if all(x is not None for _, x in items) and [k for k, _ in items] == list(range(len(items))):
            return [float(x) for _, x in items]  # type: ignore[arg-type]
    return None


# ----------------------------------------------------------------------------------------- aggregation
@dataclass
class Row:
    """One table row: a baseline (Original, Retrained) or a method label, aggregated over seeds."""

    label: str
    kind: str  # "original" | "retrained" | "method"
    method: str
    seeds: list[Any]
    metrics: dict[str, dict[str, Any] | None]
    gaps: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    per_class: list[float] | None = None


@dataclass
class Scenario:
    dataset: str
    model: str
    forget: str
    rows: list[Row]
    n_records: int
    devices: list[str]
    mia_flavours: list[str]
    audits: Any = None  # an `audit_report.AuditSection` when the records hold audits

    @property
    def classwise(self) -> bool:
        return self.forget.startswith("class:")

    @property
    def title(self) -> str:
        return f"{self.dataset} · {self.model} · {self.forget}"

    @property
    def slug(self) -> str:
        raw = f"{self.dataset}_{self.model}_{self.forget}"
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in raw)

    @property
    def forgotten_classes(self) -> list[int]:
        if not self.forget.startswith("class:"):
            return []
        try:
            return [int(c) for c in self.forget.split(":", 1)[1].split(",")]
        except ValueError:
            return []

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)

    @property
    def retrained(self) -> Row | None:
        """The retrained model's row (the reference of every plot), if the records hold it."""
        return self.row(RETRAINED)


def _mean_per_class(lists: list[list[float]]) -> list[float] | None:
    lists = [x for x in lists if x]
    if not lists or len({len(x) for x in lists}) != 1:
        return None
    return [sum(col) / len(col) for col in zip(*lists, strict=True)]


def aggregate(records: list[dict[str, Any]]) -> list[Scenario]:
    """Group records by (dataset, model, forget) and method label; summarize every column over seeds."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for rec in records:
        ident = identity(rec)
        groups.setdefault((ident["dataset"], ident["model"], ident["forget"]), []).append(rec)
    scenarios = []
    for (dataset, model, forget), recs in groups.items():
        by_label: dict[str, list[dict[str, Any]]] = {}
        baseline: dict[Any, dict[str, Any]] = {}  # seed -> first record (original/retrained are shared)
        for rec in recs:
            ident = identity(rec)
            by_label.setdefault(ident["label"], []).append(rec)
            baseline.setdefault(ident["seed"], rec)
        rows = []
        for role, label in (("original", ORIGINAL), ("retrained", RETRAINED)):
            base = list(baseline.values())
            if not any(_dig(r, "models", role, "metrics") for r in base):
                continue
            skip = {"noise_floor_avg_gap"} if role == "original" else set()
            rows.append(
                Row(
                    label,
                    role,
                    role,
                    sorted(baseline, key=str),
                    {
                        c.key: None if c.key in skip else summarize(metric_value(r, role, c.key) for r in base)
                        for c in COLUMNS
                    },
                    per_class=_mean_per_class([per_class(r, role) or [] for r in base]),
                )
            )
        for label, rs in by_label.items():
            m = {c.key: summarize(metric_value(r, "unlearned", c.key) for r in rs) for c in COLUMNS}
            m["avg_gap_of_means"] = _gap_of_means(rs)
            gaps = {k: summarize(gap_value(r, k) for r in rs) for k in GAP_KEYS}
            rows.append(
                Row(
                    label,
                    "method",
                    identity(rs[0])["method"],
                    sorted((identity(r)["seed"] for r in rs), key=str),
                    m,
                    gaps,
                    per_class=_mean_per_class([per_class(r, "unlearned") or [] for r in rs]),
                )
            )
        devices = sorted(
            {
                str(_dig(r, "environment", "device_name") or _dig(r, "environment", "device"))
                for r in recs
                if _dig(r, "environment")
            }
        )
        flavours = sorted(
            {
                str(_dig(r, "evaluation_config", "mia_flavour"))
                for r in recs
                if _dig(r, "evaluation_config", "mia_flavour")
            }
        )
        sc = Scenario(dataset, model, forget, rows, len(recs), devices, flavours)
        sc.audits = audit_section(recs, sc.classwise)
        scenarios.append(sc)
    return scenarios


def _gap_of_means(recs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Paper-compatible Avg. gap: |mean unlearned − mean retrained| per metric over seeds, then averaged."""
    parts = []
    for k in GAP_KEYS:
        u = summarize(metric_value(r, "unlearned", k) for r in recs)
        t = summarize(metric_value(r, "retrained", k) for r in recs)
        if u is None or t is None:
            return None
        parts.append(abs(u["mean"] - t["mean"]))
    return {"mean": sum(parts) / len(parts), "std": None, "ci95": None, "n": len(recs)}


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


# ----------------------------------------------------------------------------------------- the report
def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"the report needs {module.split('.')[0]}: pip install 'unlearnkit[report]'"
        ) from None


def render_html(
    scenarios: list[Scenario],
    images: dict[str, list[tuple[str, bytes]]],
    *,
    title: str,
    n_records: int,
    skipped: list[dict[str, Any]] | None = None,
    audit_images: dict[str, list[tuple[str, bytes]]] | None = None,
) -> str:
    """The self-contained page: tables as HTML and images as ``data:image/png;base64,…`` URIs."""
    jinja2 = _need("jinja2")
    from importlib import resources

    source = resources.files(__package__).joinpath("templates", "report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    sections = []
    for sc in scenarios:
        headers, rows = table_rows(sc)
        sections.append(
            {
                "title": sc.title,
                "slug": sc.slug,
                "headers": headers,
                "rows": rows,
                "footnotes": footnotes(sc),
                "audits": _audits_html(sc, (audit_images or {}).get(sc.slug, [])),
                "images": [
                    {"title": t, "src": "data:image/png;base64," + base64.b64encode(png).decode()}
                    for t, png in images.get(sc.slug, [])
                ],
            }
        )
    return env.from_string(source).render(
        title=title,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        n_records=n_records,
        sections=sections,
        skipped=skipped or [],
    )


def _audits_html(sc: Scenario, images: list[tuple[str, bytes]]) -> dict[str, Any] | None:
    """The template's audits block of one scenario (None without audits in the records)."""
    if sc.audits is None:
        return None
    headers, rows = audit_table(sc.audits)
    return {
        "headers": headers,
        "rows": rows,
        "notes": audit_notes(sc.audits, sc.classwise),
        "images": [{"title": t, "src": "data:image/png;base64," + base64.b64encode(png).decode()} for t, png in images],
    }


def build_report(bench_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Write tables, plots and ``report.html`` for ``bench_dir/records.jsonl``; return the report folder.

    Raises:
        ConfigError: when the folder holds no records.
        MissingDependencyError: when matplotlib or jinja2 is missing (the ``report`` extra).
    """
    from . import plots

    bench_dir = Path(bench_dir)
    path = bench_dir / RECORDS_FILE if bench_dir.is_dir() else bench_dir
    if not path.exists():
        raise ConfigError(f"no {RECORDS_FILE} in {bench_dir}; run `unlearnkit bench SPEC --out {bench_dir}` first")
    records = read_records(path)
    if not records:
        raise ConfigError(f"{path} holds no complete record yet")
    out = Path(out_dir) if out_dir is not None else path.parent / "report"
    out.mkdir(parents=True, exist_ok=True)
    scenarios = aggregate(records)

    written = [
        write_text_atomic(out / "tables.md", markdown_tables(scenarios) + "\n" + time_table(records)),
        write_text_atomic(out / "tables.csv", csv_table(scenarios)),
        write_json_atomic(out / "aggregates.json", aggregates_json(scenarios)),
    ]

    images: dict[str, list[tuple[str, bytes]]] = {}
    audit_images: dict[str, list[tuple[str, bytes]]] = {}
    (out / "plots").mkdir(exist_ok=True)
    for sc in scenarios:
        figs: list[tuple[str, str, Callable[[Scenario], bytes | None]]] = [
            ("metrics", "FA, RA, TA and MIA-Efficacy beside the retrained model", plots.metric_bars),
            ("tradeoff", "Avg. gap to the retrained model against runtime", plots.tradeoff),
            ("per_class", "Per-class test accuracy", plots.per_class_accuracy),
        ]
        for name, caption, fn in figs:
            png = fn(sc)
            if png is None:
                continue
            (out / "plots" / f"{sc.slug}_{name}.png").write_bytes(png)
            images.setdefault(sc.slug, []).append((caption, png))
        if sc.audits is not None:
            audit_figs = [
                ("audit_roc", "Membership inference: ROC on log-log axes", roc_figure(sc.audits, sc.title)),
                ("audit_scores", "Per-example scores", score_histograms(sc.audits, sc.title)),
            ]
            for name, caption, png in audit_figs:
                if png is not None:
                    (out / "plots" / f"{sc.slug}_{name}.png").write_bytes(png)
                    audit_images.setdefault(sc.slug, []).append((caption, png))

    skipped = _skipped(path.parent)
    spec_name = _spec_name(path.parent)
    html = render_html(
        scenarios,
        images,
        title=f"unlearnkit benchmark{': ' + spec_name if spec_name else ''}",
        n_records=len(records),
        skipped=skipped,
        audit_images=audit_images,
    )
    written.append(write_text_atomic(out / "report.html", html))
    make_readable(written)
    return out


def _skipped(bench_dir: Path) -> list[dict[str, Any]]:
    """Skipped cells listed in ``bench.json`` (context for the page; absent when there is no bench.json)."""
    try:
        info = json.loads((bench_dir / "bench.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    seen, out = set(), []
    for r in info.get("runs", []):
        if r.get("status") == "skipped":
            key = (r.get("dataset"), r.get("model"), r.get("forget"), r.get("label"))
            if key not in seen:
                seen.add(key)
                out.append(
                    {
                        "what": f"{r.get('label')} on {r.get('dataset')} · {r.get('model')} · {r.get('forget')}",
                        "why": r.get("message", ""),
                    }
                )
    return out


def _spec_name(bench_dir: Path) -> str:
    try:
        return str(json.loads((bench_dir / "bench.json").read_text(encoding="utf-8")).get("name") or "")
    except (OSError, ValueError):
        return ""
