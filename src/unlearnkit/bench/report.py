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

The code lives by concern: `unlearnkit.bench.scenario` (columns, rows, scenarios), `unlearnkit.bench.aggregate`
(records to scenarios), `unlearnkit.bench.tables` (markdown, CSV, JSON); this module renders and writes.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._io import write_json_atomic, write_text_atomic
from ..errors import ConfigError, MissingDependencyError
from .aggregate import aggregate
from .audit_report import notes as audit_notes
from .audit_report import roc_figure, score_histograms
from .audit_report import table as audit_table
from .records import RECORDS_FILE, make_readable, read_records
from .scenario import Scenario
from .tables import aggregates_json, csv_table, footnotes, markdown_tables, table_rows, time_table


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


__all__ = ["aggregate", "build_report", "markdown_tables", "render_html", "time_table"]
