"""benchmarks/sisa_fashion_mnist.py resumes: finished units are skipped, a killed run loses only the unit in flight,
and the markdown is written from whatever rows exist (on the tiny synthetic dataset, seconds)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--dataset", "synthetic", "--shards", "10", "--slices", "1", "--epochs", "1", "--member-epochs", "2"]


def _script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_sisa_fashion_mnist", ROOT / "benchmarks" / "sisa_fashion_mnist.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def test_records_skip_a_line_cut_by_a_kill_and_append_after_it(tmp_path: Path) -> None:
    mod = _script()
    path = tmp_path / "r.jsonl"
    path.write_text('{"key": {"unit": "a"}, "v": 1}\n{"v": "an older row without a key"}\n{"key": {"unit": "b"}, "v"')
    rec = mod.Records(path)
    assert rec.get({"unit": "a"})["v"] == 1 and rec.get({"unit": "b"}) is None and rec.skipped == 2
    rec.append({"key": {"unit": "b"}, "v": 2})
    again = mod.Records(path)
    assert again.get({"unit": "b"})["v"] == 2 and again.get({"unit": "a"})["v"] == 1 and again.skipped == 2
    assert path.read_text().endswith('"v"\n{"key": {"unit": "b"}, "v": 2}\n')  # the cut line stays on its own


@pytest.mark.slow  # the whole benchmark on 128 synthetic images, four times: ~20 s on 2 idle cores
def test_units_are_recorded_once_and_a_killed_run_resumes(tmp_path: Path) -> None:
    mod = _script()
    md, jsonl = tmp_path / "sisa.md", tmp_path / "sisa.jsonl"
    argv = [*ARGS, "--gap-shards", "--out", str(md)]

    # --max-minutes already over: no unit starts, the report still says what is missing
    assert mod.main([*argv, "--max-minutes", "1e-9"]) == 0
    assert not jsonl.exists()
    text = md.read_text()
    assert "No unit measured yet" in text and "| 10 | 1 | · |" in text

    mod.main(argv)
    rows = _rows(jsonl)
    units = sorted(r["key"]["unit"] + "/" + r["key"].get("request", "") for r in rows)
    assert units == [
        "accuracy/",
        "deletion/class 0",
        "deletion/one image",
        "deletion/random 1 %",
        "gap/",
        "gap/",
        "single/",
        "single_retrain_timing/",
    ]
    cell = next(r["key"] for r in rows if r["key"]["unit"] == "accuracy")
    assert (cell["epochs"], cell["member_epochs"], cell["shards"], cell["aggregation"]) == (1, 2, 10, "vote")
    timing = next(r for r in rows if r["kind"] == "single_retrain_timing")
    assert timing["full_samples"] - timing["without_one_samples"] == 1  # (a) full set, (b) one image less, 1 epoch
    assert all(r["package"]["git_sha"] for r in rows)
    text = md.read_text()
    assert "not yet measured" not in text.split("## Targets")[1].split("##")[0]
    assert "| exactness" in text and "8 of 8 units measured" in text

    before = jsonl.read_bytes()
    mod.main(argv)  # everything recorded: nothing recomputed, nothing appended
    assert jsonl.read_bytes() == before

    # a kill: the last two units lost and a line cut mid-write
    lines = before.decode().splitlines(keepends=True)
    jsonl.write_text("".join(lines[:-2]) + lines[-2][:40])
    mod.main(argv)
    again = _rows(jsonl)
    assert sorted(json.dumps(r["key"], sort_keys=True) for r in again) == sorted(
        json.dumps(r["key"], sort_keys=True) for r in rows
    )
    by_key = {json.dumps(r["key"], sort_keys=True): r for r in rows}
    for r in again:  # the redone units measure the same thing (deletion cost in samples, exactness)
        old = by_key[json.dumps(r["key"], sort_keys=True)]
        if r["kind"] == "deletion":
            assert (r["samples_processed"], r["max_abs_diff_state_dict"]) == (old["samples_processed"], 0.0)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--member-epochs", "0"], "--member-epochs 0"),
        (["--part", "3/2"], "expected 1 ≤ i ≤ n"),
        (["--max-minutes", "0"], "--max-minutes 0"),
    ],
)
def test_bad_arguments_are_refused_before_any_compute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    mod = _script()
    with pytest.raises(SystemExit) as exc:
        mod.main([*ARGS, *extra, "--out", str(tmp_path / "x.md")])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.md").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--member-epochs", "1", "--slices", "5"], "--member-epochs 1 with --slices 5"),
        (["--model", "nosuch"], "unknown model 'nosuch'"),
        (["--dataset", "nosuch"], "unknown dataset 'nosuch'"),
    ],
)
def test_bad_settings_are_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    mod = _script()
    assert mod.main([*ARGS, *extra, "--out", str(tmp_path / "x.md")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())
