"""The bench runner: records, skips, resume, failures, the lock, the CLI verb, and kill -9 mid-run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from unlearnkit.bench._testing import fake_run
from unlearnkit.bench.records import read_records
from unlearnkit.bench.runner import _locked, run_bench
from unlearnkit.bench.spec import load_spec, plan_runs
from unlearnkit.cli import main
from unlearnkit.errors import ConfigError


class Counting:
    """Injected runner: records every call, optionally fails for one method."""

    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[dict] = []
        self.fail = fail

    def __call__(self, dataset, model, forget, method, **kw):
        self.calls.append({"dataset": dataset, "model": model, "forget": forget, "method": method, **kw})
        if method == self.fail:
            raise RuntimeError("boom")
        return fake_run(dataset, model, forget, method, **kw)


def test_runs_every_cell_once_and_skips_incompatible(write_spec, tmp_path):
    spec_path = write_spec()
    out = tmp_path / "out"
    runner = Counting()
    result = run_bench(spec_path, out, device="cpu", data_dir="DATA", progress=False, runner=runner)
    # 2 forget × 2 seeds × 3 methods = 12 cells; fake_class_only × random × 2 seeds skipped
    assert result.count("done") == 10 and result.count("skipped") == 2 and result.ok
    assert len(runner.calls) == 10
    c = runner.calls[0]
    assert (c["dataset"], c["model"], c["forget"], c["method"]) == ("synthetic", "small_cnn", "class:0", "fake_any")
    assert c["device"] == "cpu" and c["data_dir"] == "DATA" and c["progress"] is False and c["overrides"] == {}
    assert {tuple(sorted(c["overrides"].items())) for c in runner.calls} == {(), (("lr", 0.5),)}
    assert not any(c["method"] == "fake_class_only" and c["forget"].startswith("random") for c in runner.calls)

    recs = read_records(out)
    assert len(recs) == 10
    keys = {r["bench"]["run_key"] for r in recs}
    assert keys == {r.key for r in plan_runs(load_spec(spec_path)) if not r.skip_reason}
    assert all(r["bench"]["wall_seconds"] >= 0 and "models" in r for r in recs)
    assert (out / "spec.toml").read_text() == spec_path.read_text()
    info = json.loads((out / "bench.json").read_text())
    assert info["counts"] == {"done": 10, "done_earlier": 0, "skipped": 2, "failed": 0, "pending": 0}
    assert info["total_wall_seconds"] > 0 and len(info["runs"]) == 12
    skipped = [r for r in info["runs"] if r["status"] == "skipped"]
    assert all(r["label"] == "fake_class_only" and "class" in r["message"] for r in skipped)
    assert all(isinstance(r["wall_seconds"], float) for r in info["runs"] if r["status"] == "done")


def test_rerun_skips_finished_runs_and_a_grown_grid_runs_only_new_cells(write_spec, tmp_path):
    out = tmp_path / "out"
    run_bench(write_spec(), out, progress=False, runner=Counting())
    again = Counting()
    result = run_bench(write_spec(), out, progress=False, runner=again)
    assert again.calls == [] and result.count("done_earlier") == 10
    grown = Counting()
    run_bench(write_spec(seeds="[0, 1, 2]"), out, progress=False, runner=grown)
    assert len(grown.calls) == 5 and {c["seed"] for c in grown.calls} == {2}
    assert len(read_records(out)) == 15
    assert len((out / "records.jsonl").read_text().splitlines()) == 15


def test_a_failed_run_is_not_recorded_and_is_retried(write_spec, tmp_path):
    out = tmp_path / "out"
    result = run_bench(write_spec(), out, progress=False, runner=Counting(fail="fake_class_only"))
    assert result.count("failed") == 2 and result.count("done") == 8 and not result.ok
    info = json.loads((out / "bench.json").read_text())
    assert {r["message"] for r in info["runs"] if r["status"] == "failed"} == {"RuntimeError: boom"}
    retry = Counting()
    result = run_bench(write_spec(), out, progress=False, runner=retry)
    assert [c["method"] for c in retry.calls] == ["fake_class_only"] * 2 and result.ok
    assert len(read_records(out)) == 10


def test_torn_tail_is_repaired_and_that_run_redone(write_spec, tmp_path):
    out = tmp_path / "out"
    run_bench(write_spec(), out, progress=False, runner=Counting())
    path = out / "records.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # last append cut in half
    redo = Counting()
    run_bench(write_spec(), out, progress=False, runner=redo)
    assert len(redo.calls) == 1
    text = path.read_text()
    assert text.endswith("\n") and len(text.splitlines()) == 10
    assert all(json.loads(x) for x in text.splitlines())


def test_second_bench_on_the_same_folder_is_refused(write_spec, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with _locked(out), pytest.raises(ConfigError, match="another bench is running"):
        run_bench(write_spec(), out, progress=False, runner=Counting())
    run_bench(write_spec(), out, progress=False, runner=Counting())  # free again afterwards


def test_cli_bench_with_hidden_runner_option(write_spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(write_spec()), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["records"] == 10 and summary["done"] == 10 and summary["skipped"] == 2
    assert main(["bench", str(write_spec()), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["done"] == 0 and summary["done_earlier"] == 10


def test_cli_bench_rejects_a_bad_spec_before_running(write_spec, tmp_path, capsys):
    bad = write_spec('[grid]\ndatasets = ["nope"]\nmodels = []\nforget = ["class:x"]\nseeds = [0]\n')
    assert main(["bench", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "4 problems" in err and "grid.datasets[0]" in err and "grid.models: is empty" in err
    assert "grid.forget[0]" in err and "methods: missing" in err
    assert not (tmp_path / "out").exists()


def test_cli_bench_exit_code_1_when_a_run_fails(write_spec, tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_FAKE_FAIL", "fake_any")
    assert main(["bench", str(write_spec()), "--out", str(tmp_path / "out"), "--no-progress"]) == 1


# ------------------------------------------------------------------------------------------- kill -9
CHILD = (
    "import sys, unlearnkit.bench._testing as t; t.register_fake_methods(); from unlearnkit.cli import main; "
    "raise SystemExit(main(['bench', sys.argv[1], '--out', sys.argv[2], '--no-progress']))"
)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_kill_9_mid_run_resumes_with_nothing_lost_or_duplicated(write_spec, tmp_path):
    spec_path = write_spec(seeds="[0, 1, 2]")  # 15 runs to do, 3 skipped
    expected = {r.key for r in plan_runs(load_spec(spec_path)) if not r.skip_reason}
    out, calls = tmp_path / "out", tmp_path / "calls.jsonl"
    records = out / "records.jsonl"
    env = {
        **os.environ,
        "UNLEARNKIT_FAKE_SLEEP": "0.1",
        "UNLEARNKIT_FAKE_CALLS": str(calls),
        "OMP_NUM_THREADS": "1",
        "UNLEARNKIT_PROGRESS": "0",
    }
    rng = random.Random(0)
    kills = 0
    for _ in range(2):
        before = _lines(records)
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(spec_path), str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while _lines(records) < before + 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.1))  # somewhere inside the next run (or its append)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait(timeout=30)
    assert kills >= 2 and 0 < _lines(records) < len(expected)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec_path), str(out)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    raw = records.read_text().splitlines()
    keys = [json.loads(line)["bench"]["run_key"] for line in raw]  # every line parses
    assert len(keys) == len(set(keys)) == len(expected)  # 0 duplicated
    assert set(keys) == expected  # 0 lost
    n_calls = len(calls.read_text().splitlines())
    assert len(expected) <= n_calls <= len(expected) + kills  # at most the run in flight is redone per kill
    info = json.loads((out / "bench.json").read_text())
    assert info["counts"]["done"] + info["counts"]["done_earlier"] == len(expected)


def test_parts_split_whole_cells_and_together_cover_the_grid(write_spec, tmp_path):
    out = tmp_path / "out"
    cell = lambda c: (c["forget"], c["seed"])  # noqa: E731
    seen: list[set] = []
    for i in (1, 2, 3):
        runner = Counting()
        run_bench(write_spec(), out, progress=False, runner=runner, part=(i, 3))
        seen.append({cell(c) for c in runner.calls})
    # 2 forget specs × 2 seeds = 4 cells dealt to 3 parts: disjoint, all methods of a cell in one part
    assert all(not (a & b) for j, a in enumerate(seen) for b in seen[j + 1 :])
    assert set().union(*seen) == {("class:0", 0), ("class:0", 1), ("random:0.1", 0), ("random:0.1", 1)}
    assert len(read_records(out)) == 10
    with pytest.raises(ConfigError, match="1 <= i <= n"):
        run_bench(write_spec(), out, progress=False, runner=Counting(), part=(4, 3))


def test_max_minutes_stops_starting_runs_and_a_rerun_continues(write_spec, tmp_path):
    out = tmp_path / "out"
    first = Counting()
    result = run_bench(write_spec(), out, progress=False, runner=first, max_minutes=0)
    assert first.calls == [] and result.count("done") == 0
    rest = Counting()
    run_bench(write_spec(), out, progress=False, runner=rest)
    assert len(rest.calls) == 10


def test_cli_bench_part_and_max_minutes(write_spec, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", str(write_spec()), "--out", str(out), "--no-progress", "--part", "1/2"]) == 0
    first = len(read_records(out))
    assert 0 < first < 10
    assert main(["bench", str(write_spec()), "--out", str(out), "--no-progress", "--part", "2/2"]) == 0
    assert len(read_records(out)) == 10
    for bad in (["--part", "3/2"], ["--part", "x"], ["--max-minutes", "-1"]):
        with pytest.raises(SystemExit) as exc:
            main(["bench", str(write_spec()), "--out", str(tmp_path / "o2"), *bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--part 1/4" in err or "--max-minutes 45" in err
    assert not (tmp_path / "o2").exists()
