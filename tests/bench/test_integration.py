"""The bench and the report on the real pipeline (tiny synthetic data; trains small models, so marked slow)."""

from __future__ import annotations

import json

import pytest

from unlearnkit.cli import main

pytestmark = pytest.mark.slow

SPEC = """
name = "real-smoke"
[grid]
datasets = ["synthetic"]
models = ["small_cnn"]
forget = ["class:0", "random:0.1"]
seeds = [0]

[[methods]]
name = "ft"
set = { epochs = 1 }

[[methods]]
name = "boundary_shrink"
"""


def test_bench_and_report_with_run_experiment(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "out"
    assert main(["bench", str(spec), "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["done"], summary["skipped"], summary["failed"]) == (3, 1, 0)
    recs = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {(r["bench"]["label"], r["bench"]["forget"]) for r in recs} == {
        ("ft[epochs=1]", "class:0"),
        ("ft[epochs=1]", "random:0.1"),
        ("boundary_shrink", "class:0"),
    }
    for r in recs:
        assert isinstance(r["gaps_to_retrained"]["avg_gap_to_retrained"], float)
    ft = next(r for r in recs if r["bench"]["method"] == "ft")
    assert ft["method"]["config"]["epochs"] == 1  # the override reached the method
    assert main(["report", str(out)]) == 0
    md = (out / "report" / "tables.md").read_text()
    assert "| ft[epochs=1] | 1 |" in md and "| boundary_shrink | 1 |" in md
