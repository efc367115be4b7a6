"""Reports: tables, CSV, aggregates, plots and the HTML page, all from records only."""

from __future__ import annotations

import csv
import io
import json
import re
import statistics

import pytest

from unlearnkit.bench._testing import fake_records as make_records
from unlearnkit.bench.records import append_record
from unlearnkit.bench.report import aggregate, build_report
from unlearnkit.bench.stats import summarize
from unlearnkit.cli import main
from unlearnkit.errors import ConfigError


def _bench_dir(tmp_path, records):
    d = tmp_path / "bench"
    d.mkdir()
    for r in records:
        append_record(d / "records.jsonl", r)
    return d


def test_summarize_matches_the_t_interval_of_the_spec():
    s = summarize([1.0, 2.0, 4.0])
    assert s["n"] == 3 and s["mean"] == pytest.approx(7 / 3) and s["std"] == pytest.approx(statistics.stdev([1, 2, 4]))
    half = 4.303 * s["std"] / 3**0.5  # t_{0.975, 2} = 4.303 (evaluation.md §7)
    assert s["ci95"] == pytest.approx([s["mean"] - half, s["mean"] + half], abs=1e-3)
    assert summarize([5.0]) == {"mean": 5.0, "std": None, "ci95": None, "n": 1}
    assert summarize([None, None]) is None and summarize([None, 2])["mean"] == 2.0


def test_aggregate_rows_and_numbers():
    recs = make_records()
    scenarios = aggregate(recs)
    assert [s.forget for s in scenarios] == ["class:0", "random:0.1"]
    sc = scenarios[0]
    assert [r.label for r in sc.rows] == ["Original", "Retrained (oracle)", "fake_any", "scrub"]
    mine = [r for r in recs if r["bench"]["label"] == "scrub" and r["bench"]["forget"] == "class:0"]
    fa = [r["models"]["unlearned"]["metrics"]["accuracy_forget"] for r in mine]
    gap = [r["gaps_to_retrained"]["avg_gap_to_retrained"] for r in mine]
    row = sc.row("scrub")
    assert row.metrics["accuracy_forget"]["mean"] == pytest.approx(statistics.mean(fa))
    assert row.metrics["accuracy_forget"]["std"] == pytest.approx(statistics.stdev(fa))
    assert row.metrics["avg_gap_to_retrained"]["mean"] == pytest.approx(statistics.mean(gap))
    assert row.gaps["accuracy_forget"]["mean"] == pytest.approx(
        statistics.mean(r["gaps_to_retrained"]["accuracy_forget"] for r in mine)
    )
    ret = [r["models"]["retrained"]["metrics"]["accuracy_test"] for r in mine]
    assert sc.row("Retrained (oracle)").metrics["accuracy_test"]["mean"] == pytest.approx(statistics.mean(ret))
    assert row.per_class is not None and len(row.per_class) == 10


def test_build_report_writes_tables_plots_and_html(tmp_path):
    recs = make_records()
    d = _bench_dir(tmp_path, recs)
    out = build_report(d)
    assert out == d / "report"
    md, timing = (out / "tables.md").read_text().split("## Where the time went")
    assert "| fake_any | 6 |" in timing  # one timing row per method label over every scenario
    assert md.count("## synthetic · small_cnn · ") == 2
    for label in ("Original", "Retrained (oracle)", "fake_any", "scrub"):
        assert md.count(f"| {label} | ") == 2
    # one cell checked digit by digit: FA of scrub on class:0 is "mean ± std (gap)"
    mine = [r for r in recs if r["bench"]["label"] == "scrub" and r["bench"]["forget"] == "class:0"]
    fa = [r["models"]["unlearned"]["metrics"]["accuracy_forget"] for r in mine]
    g = statistics.mean(r["gaps_to_retrained"]["accuracy_forget"] for r in mine)
    assert f"{statistics.mean(fa):.2f} ± {statistics.stdev(fa):.2f} ({g:.2f})" in md
    assert "Noise floor" in md and "seeds 0, 1, 2" in md

    rows = list(csv.DictReader(io.StringIO((out / "tables.csv").read_text())))
    assert len(rows) == 8 and {r["row"] for r in rows} == {"Original", "Retrained (oracle)", "fake_any", "scrub"}
    scrub = next(r for r in rows if r["row"] == "scrub" and r["forget"] == "class:0")
    assert float(scrub["accuracy_forget_mean"]) == pytest.approx(statistics.mean(fa))
    assert (
        float(scrub["accuracy_forget_ci95_lo"])
        < float(scrub["accuracy_forget_mean"])
        < float(scrub["accuracy_forget_ci95_hi"])
    )

    agg = json.loads((out / "aggregates.json").read_text())
    entry = next(a for a in agg if a["group"]["row"] == "scrub" and a["group"]["forget"] == "class:0")
    assert entry["n_seeds"] == 3 and entry["avg_gap_of_means"]["note"] == "paper-compatible"
    assert set(entry["metrics"]["accuracy_forget"]) == {"mean", "std", "ci95", "n"}

    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == [
        "synthetic_small_cnn_class_0_metrics.png",
        "synthetic_small_cnn_class_0_per_class.png",
        "synthetic_small_cnn_class_0_tradeoff.png",
        "synthetic_small_cnn_random_0.1_metrics.png",
        "synthetic_small_cnn_random_0.1_tradeoff.png",
    ]  # per-class only for class-wise forgetting
    assert all((out / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)

    html = (out / "report.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) == 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:|//|file:)', html)  # self-contained
    for label in ("fake_any", "scrub"):
        assert html.count(f'data-label="{label}"') == 2


def test_report_without_per_class_accuracy_skips_that_plot(tmp_path):
    d = _bench_dir(tmp_path, make_records(per_class=False, forgets=("class:0",)))
    out = build_report(d, tmp_path / "elsewhere")
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "synthetic_small_cnn_class_0_metrics.png",
        "synthetic_small_cnn_class_0_tradeoff.png",
    ]
    assert (tmp_path / "elsewhere" / "report.html").exists()


def test_report_tolerates_a_torn_last_line_and_partial_records(tmp_path):
    recs = make_records(labels=("a",), forgets=("random:0.1",), seeds=(0,))
    del recs[0]["models"]["unlearned"]["metrics"]["kl_to_retrained_forget"]
    recs[0]["noise_floor_avg_gap"] = None
    d = _bench_dir(tmp_path, recs)
    with open(d / "records.jsonl", "ab") as fh:
        fh.write(b'{"bench": {"run_key": "torn"')
    out = build_report(d)
    md = (out / "tables.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| a |"))
    assert row.count("–") >= 2  # KL and noise floor missing: shown as dashes, not errors
    assert "Noise floor: not in the records." in md


def test_records_without_a_bench_block_are_grouped_by_their_own_fields(tmp_path):
    recs = make_records(labels=("ft",), forgets=("class:0",), seeds=(0, 1))
    for r in recs:
        del r["bench"]
    sc = aggregate(recs)[0]
    assert (sc.dataset, sc.model, sc.forget) == ("synthetic", "small_cnn", "class:0")
    assert sc.row("ft").seeds == [0, 1]


def test_report_cli(tmp_path, capsys):
    d = _bench_dir(tmp_path, make_records(labels=("ft",), forgets=("random:0.1",)))
    assert main(["report", str(d)]) == 0
    assert json.loads(capsys.readouterr().out)["report"].endswith("report.html")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no records.jsonl" in capsys.readouterr().err
    (empty / "records.jsonl").write_text("")
    with pytest.raises(ConfigError, match="no complete record"):
        build_report(empty)


def test_bench_then_report_end_to_end(write_spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(write_spec()), "--out", str(out), "--no-progress"]) == 0
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    for label in ("fake_any", "fake_any-lr0.5", "fake_class_only"):
        assert f'data-label="{label}"' in html
    assert "Skipped combinations" in html and "supports only class forgetting" in html


def test_time_table_splits_each_run_into_unlearning_evaluation_and_rest():
    from unlearnkit.bench.report import time_table

    def rec(label, wall, unlearn, ev):
        return {
            "bench": {"label": label, "wall_seconds": wall},
            "models": {"unlearned": {"runtime_seconds": unlearn}},
            "evaluation_timing": {"total_seconds": ev},
        }

    text = time_table(
        [
            rec("ft", 10.0, 6.0, 3.0),
            rec("ft", 20.0, 12.0, 5.0),
            rec("retrain", 90.0, 80.0, 4.0),
            {"method": {"name": "x"}},
        ]
    )  # a record without bench timing is left out
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in text.splitlines()
        if line.startswith("| ") and not line.startswith("| Method")
    }
    assert list(rows) == ["retrain", "ft"]  # largest share first
    assert rows["ft"] == "| ft | 2 | 30 | 25 % | 18 | 8 | 4 |"
    assert rows["retrain"] == "| retrain | 1 | 90 | 75 % | 80 | 4 | 6 |"
    assert "120 s (2.0 min) over 3 runs" in text
    assert time_table([{"method": {"name": "x"}}]) == ""
