"""Issue 28: the bench on Ray (`unlearnkit.bench.ray_executor`), against a local Ray started here with 2 CPUs.

Same records as the local executor, each model trained once, a worker killed mid-task (retried once, else recorded
as failed and redone by the next invocation), ``kill -9`` and Ctrl-C of the driver then resume (nothing lost or
duplicated), and the refusals before any compute (Ray missing, flags that cannot work).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import unlearnkit
from unlearnkit.bench._testing import FakeRunner
from unlearnkit.bench.ray_executor import ray_available
from unlearnkit.bench.records import read_records
from unlearnkit.bench.runner import run_bench
from unlearnkit.bench.spec import load_spec, plan_runs
from unlearnkit.cli import main

needs_ray = pytest.mark.skipif(
    not ray_available(), reason="ray is not installed: pip install 'unlearnkit[ray]' (CI installs it via the Makefile)"
)
SRC = str(Path(unlearnkit.__file__).resolve().parents[1])

REAL_SPEC = """
name = "ray-vs-local"
audits = "none"
[grid]
datasets = ["synthetic"]
models = ["small_cnn"]
forget = ["class:0"]
seeds = [0]
[[methods]]
name = "ft"
set = { epochs = 1 }
[[methods]]
name = "rl"
"""
FAKE_SPEC = """
name = "fake"
[grid]
datasets = ["synthetic"]
models = ["small_cnn"]
forget = ["class:0", "random:0.1"]
seeds = [0, 1]
[[methods]]
name = "fake_any"
"""


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray with 2 CPUs for this module (no dashboard), shut down after its last test."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _spec(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _keys(out: Path) -> list[str]:
    """Every run key in records.jsonl, one per line (every line must parse)."""
    path = out / "records.jsonl"
    return [json.loads(line)["bench"]["run_key"] for line in path.read_text().splitlines()] if path.exists() else []


def _metrics(record: dict) -> dict:
    """A record's numbers without the ones that measure time."""
    timing = ("runtime", "speedup", "seconds", "timing")
    models = {
        role: {
            "sha256": m.get("sha256"),
            **{k: v for k, v in (m.get("metrics") or {}).items() if not any(t in k for t in timing)},
        }
        for role, m in record["models"].items()
    }
    return {"models": models, "gaps": record["gaps_to_retrained"], "noise": record.get("noise_floor_avg_gap")}


# ------------------------------------------------------------------------------------------- before any compute
def test_without_ray_the_cli_says_how_to_install_it_before_any_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("unlearnkit.bench.ray_executor.ray_available", lambda: False)
    out = tmp_path / "out"
    code = main(["bench", str(_spec(tmp_path, FAKE_SPEC)), "--out", str(out), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'unlearnkit[ray]'" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--address", "auto"], "--address only apply to --executor ray"),
        (["--executor", "ray", "--device", "cuda"], "needs --num-gpus"),
        (["--executor", "ray", "--device", "cpu", "--num-gpus", "1"], "reserves GPUs no run uses"),
        (["--executor", "ray", "--num-cpus", "0"], "--num-cpus must be a number > 0"),
        (["--executor", "ray", "--max-parallel", "0"], "expected an integer >= 1"),
    ],
)
def test_ray_flags_that_cannot_work_are_refused_before_any_compute(tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    try:
        code = main(["bench", str(_spec(tmp_path, FAKE_SPEC)), "--out", str(out), *flags])
    except SystemExit as exc:  # argparse refuses a malformed value itself
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()


def test_the_python_api_refuses_ray_options_for_the_local_executor_and_unknown_executors(tmp_path):
    from unlearnkit.errors import ConfigError

    spec = _spec(tmp_path, FAKE_SPEC)
    with pytest.raises(ConfigError, match="num_cpus only apply to the Ray executor"):
        run_bench(spec, tmp_path / "a", runner=FakeRunner(), num_cpus=2)
    with pytest.raises(ConfigError, match="unknown executor 'dask'; choose one of local, ray"):
        run_bench(spec, tmp_path / "b", runner=FakeRunner(), executor="dask")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_spec_resources_are_validated(tmp_path):
    from unlearnkit.errors import ConfigError

    text = FAKE_SPEC + "[resources]\nnum_cpus = 0\nnum_gpus = -1\nnum_gpu = 1\n"
    with pytest.raises(ConfigError) as info:
        load_spec(_spec(tmp_path, text))
    msg = str(info.value)
    assert "resources.num_cpus: expected a number > 0" in msg and "resources.num_gpus: expected a number >= 0" in msg
    assert "unknown key 'num_gpu'" in msg
    ok = load_spec(_spec(tmp_path, FAKE_SPEC + "[resources]\nnum_cpus = 2\nnum_gpus = 0.5\n"))
    assert ok.resources == {"num_cpus": 2.0, "num_gpus": 0.5}


# ------------------------------------------------------------------------------------------- the cache lock
LOCK_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from unlearnkit.data import load_dataset
from unlearnkit.oracle import train_or_load
bundle = load_dataset("synthetic")
Path(sys.argv[2]).touch()
t = train_or_load(bundle, "small_cnn", None, seed=7, device="cpu", progress=False)
print(json.dumps({"from_cache": t.from_cache, "wall": t.meta["wall_seconds"]}))
"""


def test_two_processes_asking_for_one_missing_model_train_it_once(tmp_path, monkeypatch):
    """The lock of `train_or_load`: held here until both children wait on it, then exactly one of them trains."""
    from unlearnkit.data import load_dataset
    from unlearnkit.data.datasets import bundle_digest
    from unlearnkit.data.splits import split_for
    from unlearnkit.models import model_config, model_for_dataset
    from unlearnkit.oracle import entry_folder, entry_lock, oracle_key
    from unlearnkit.training import default_recipe

    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    bundle = load_dataset("synthetic")
    cfg = model_config(model_for_dataset("small_cnn", bundle.info))
    split = split_for(bundle, None, 7)
    key = oracle_key("synthetic", cfg, default_recipe("synthetic", "small_cnn"), split, 7, bundle_digest(bundle))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with entry_lock(entry_folder(key)):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", LOCK_CHILD, SRC, str(tmp_path / f"started{i}")],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"started{i}").exists() for i in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # both have found the entry missing and wait on the lock by now
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert sorted(r["from_cache"] for r in results) == [False, True]
    assert results[0]["wall"] == results[1]["wall"]  # the second loaded the first one's entry
    assert len(list((tmp_path / "cache" / "models").glob("*/*/meta.json"))) == 1


# ------------------------------------------------------------------------------------------- Ray
@needs_ray
def test_ray_records_equal_the_local_ones_and_each_model_is_trained_once(tmp_path, monkeypatch, ray_address):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))  # fresh: the Ray bench trains every model
    spec = _spec(tmp_path, REAL_SPEC)
    on_ray = run_bench(spec, tmp_path / "ray", device="cpu", progress=False, executor="ray")
    assert on_ray.ok and on_ray.count("done") == 2
    metas = [json.loads(p.read_text()) for p in (tmp_path / "cache" / "models").glob("*/*/meta.json")]
    assert len(metas) == 3  # the original, the retrained oracle and the noise-floor oracle: each stored once
    # Ray gives a 1-CPU task one torch thread (OMP_NUM_THREADS = num_cpus); with the same thread count here the
    # float reductions run in the same order and the records match to the last bit (the unlearned weights too)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_bench(spec, tmp_path / "local", device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert local.ok and local.count("done") == 2
    ray_recs = {r["bench"]["run_key"]: r for r in read_records(tmp_path / "ray")}
    local_recs = {r["bench"]["run_key"]: r for r in read_records(tmp_path / "local")}
    assert ray_recs.keys() == local_recs.keys() and len(ray_recs) == 2
    for key, rec in ray_recs.items():
        assert _metrics(rec) == _metrics(local_recs[key]), rec["bench"]["label"]
    # both runs were scored against the one stored oracle: their retraining time is its entry's, not their own
    retrained = next(m for m in metas if m["role"] == "retrained" and m["seed"] == 0)
    for rec in ray_recs.values():
        assert rec["models"]["retrained"]["runtime_seconds"] == retrained["wall_seconds"]


@needs_ray
def test_a_worker_killed_mid_task_is_retried_once_else_failed_then_resumed(tmp_path, ray_address):
    spec = _spec(tmp_path, FAKE_SPEC.replace('forget = ["class:0", "random:0.1"]', 'forget = ["class:0"]'))
    expected = {r.key for r in plan_runs(load_spec(spec))}
    state = tmp_path / "state"
    state.mkdir()
    # fake_any seed 0 and seed 1: calls 1-3 of fake_any kill their worker. Bench 1: the first run's worker dies, Ray
    # retries once, dies again -> failed; the other run dies once and succeeds on its retry.
    runner = FakeRunner(crash_method="fake_any", crash_times=3, state_dir=str(state))
    first = run_bench(spec, tmp_path / "out", progress=False, runner=runner, executor="ray", max_parallel=1)
    failed = [s for s in first.statuses if s.status == "failed"]
    assert len(failed) == 1 and first.count("done") == 1
    assert "WorkerCrashedError" in (failed[0].message or ""), failed[0].message
    info = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert [r["status"] for r in info["runs"]].count("failed") == 1
    assert len(_keys(tmp_path / "out")) == 1
    calls = (state / "calls").read_text().splitlines()
    assert len(calls) == 4  # 2 attempts of the failed run, 2 of the retried one: one retry each, not forever
    second = run_bench(spec, tmp_path / "out", progress=False, runner=runner, executor="ray")
    assert second.ok and second.count("done") == 1 and second.count("done_earlier") == 1
    keys = _keys(tmp_path / "out")
    assert len(keys) == len(set(keys)) == 2 and set(keys) == expected


@needs_ray
def test_a_gpu_run_is_refused_on_a_cluster_without_a_gpu_node(tmp_path, ray_address):
    """A run that declares a GPU would wait forever on a CPU-only cluster: refused before any run starts."""
    from unlearnkit.errors import ConfigError

    state = tmp_path / "state"
    state.mkdir()
    with pytest.raises(ConfigError, match=r"no node of the Ray cluster has 1 CPU\(s\) and 1 GPU\(s\)"):
        run_bench(
            _spec(tmp_path, FAKE_SPEC),
            tmp_path / "out",
            progress=False,
            runner=FakeRunner(state_dir=str(state)),
            executor="ray",
            num_gpus=1,
        )
    assert not (state / "calls").exists() and _keys(tmp_path / "out") == []


@needs_ray
def test_a_spent_time_budget_starts_no_ray_task_and_says_so(tmp_path, ray_address):
    import io

    from rich.console import Console

    state = tmp_path / "state"
    state.mkdir()
    text = io.StringIO()
    result = run_bench(
        _spec(tmp_path, FAKE_SPEC),
        tmp_path / "out",
        progress=False,
        runner=FakeRunner(state_dir=str(state)),
        executor="ray",
        max_minutes=0,
        console=Console(file=text, width=200),
    )
    assert result.count("pending") == 4 and not result.ok
    assert "time budget of 0 min spent; 4 runs left" in text.getvalue()
    assert not (state / "calls").exists()


DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import unlearnkit.bench._testing as t
t.register_fake_methods()
from unlearnkit.bench.runner import run_bench
try:
    run_bench(sys.argv[2], sys.argv[3], progress=False, runner=t.FakeRunner(sleep=float(sys.argv[5]),
              state_dir=sys.argv[6]), executor="ray", address=sys.argv[4])
except KeyboardInterrupt:
    raise SystemExit(130)
"""


def _driver(spec: Path, out: Path, address: str, sleep: float, state: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", DRIVER, SRC, str(spec), str(out), address, str(sleep), str(state)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_records(out: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while len(_keys(out)) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_keys(out)) >= n, proc.stderr.read() if proc.poll() is not None and proc.stderr else "timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_ray
def test_kill_9_and_ctrl_c_of_the_driver_then_resume_lose_and_duplicate_nothing(tmp_path, ray_address):
    spec = _spec(tmp_path, FAKE_SPEC)
    expected = {r.key for r in plan_runs(load_spec(spec))}  # 4 runs
    out, state = tmp_path / "out", tmp_path / "state"
    state.mkdir()
    # kill -9 once the first runs are recorded (the next ones are in flight on the workers)
    proc = _driver(spec, out, ray_address, 1.0, state)
    _wait_records(out, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = len(_keys(out))
    assert 1 <= killed_at < len(expected)
    # Ctrl-C of the next driver while its runs are in flight (each would take 60 s): exit 130, bench.json says
    # interrupted, nothing recorded for them, and their workers are stopped
    n_calls = len((state / "calls").read_text().splitlines())
    proc = _driver(spec, out, ray_address, 60.0, state)
    deadline = time.monotonic() + 90
    while len((state / "calls").read_text().splitlines()) <= n_calls:  # its runs have started on the workers
        assert time.monotonic() < deadline and proc.poll() is None, "the second driver started no run"
        time.sleep(0.05)
    time.sleep(0.3)
    before = len(_keys(out))
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=150) == 130  # generous for a loaded machine; a driver that waited for its runs
    # instead of cancelling them would have recorded them (checked below)
    info = json.loads((out / "bench.json").read_text())
    assert info["interrupted"] is True and info["counts"]["pending"] >= 1
    assert len(_keys(out)) == before  # nothing recorded for the cancelled runs
    pids = {json.loads(c)["pid"] for c in (state / "calls").read_text().splitlines()[n_calls:]}
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "a cancelled run's worker is still running"
    # resume in this process: every run exactly once
    done = run_bench(spec, out, progress=False, runner=FakeRunner(), executor="ray")
    assert done.ok
    keys = _keys(out)
    assert len(keys) == len(set(keys)) == len(expected) and set(keys) == expected
