"""The deletion-request ledger and `unlearnkit request`: chained rows, atomic apply, concurrency, crashes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")

from unlearnkit import sisa
from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.ledger import LEDGER_FILE, MODEL_FILE, SLEEP_ENV, LedgerError, ModelDirectory, file_sha256
from unlearnkit.testing import tiny_bundle, tiny_model
from unlearnkit.training import Recipe


@pytest.fixture(scope="module")
def ensemble() -> sisa.SISAEnsemble:
    return sisa.train_sisa(
        tiny_model(), tiny_bundle().train, shards=2, slices=2, recipe=Recipe(epochs=2, batch_size=16), seed=0
    )


@pytest.fixture
def model_dir(tmp_path: Path, ensemble: sisa.SISAEnsemble) -> ModelDirectory:
    return ModelDirectory.create(tmp_path / "m", ensemble, dataset="synthetic")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "unlearnkit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "UNLEARNKIT_PROGRESS": "0", **(env or {})},
    )


def _state(d: ModelDirectory) -> tuple[str, int, int]:
    return file_sha256(d.model_path), len(d.ledger.requests_list()), len(d.ledger.applications_list())


def test_add_apply_verify_end_to_end(model_dir: ModelDirectory) -> None:
    d = model_dir
    before = file_sha256(d.model_path)
    d.add("alice", indices=[3, 40], request_id="r-alice")
    d.add("class three", spec="class:3")
    assert [r.status for r in d.ledger.requests_list()] == ["pending", "pending"]
    res = d.apply(device="cpu")
    assert res is not None and res.method == "sisa" and res.applied == ["r-alice", "req-000002"]
    assert res.model_before == before and res.model_after == file_sha256(d.model_path) != before
    assert {r.status for r in d.ledger.requests_list()} == {"applied"}
    ens = sisa.load_sisa(d.model_path)
    targets = tiny_bundle().train.targets
    want = {3, 40} | {i for i in range(len(targets)) if int(targets[i]) == 3}
    assert set(ens.deleted_indices()) == want
    cost, audit = res.audit["cost"], res.audit["audit"]
    assert 0 < cost["samples_processed"] <= cost["full_retrain_samples"]
    assert {"accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget"} <= set(audit["unlearned"])
    assert "prediction_agreement_test" in audit["change"]
    assert d.verify().ok
    assert d.apply() is None  # nothing pending


def test_bad_requests_change_nothing(model_dir: ModelDirectory) -> None:
    d = model_dir
    d.add("a", indices=[1, 2], request_id="x")
    snap = _state(d)
    with pytest.raises(IncompatibleError, match="out of range"):
        d.add("b", indices=[10_000])
    with pytest.raises(IncompatibleError, match="exists already"):
        d.add("b", indices=[5], request_id="x")
    with pytest.raises(IncompatibleError, match="pending request"):
        d.add("b", indices=[2, 9])
    with pytest.raises(ConfigError, match="either"):
        d.add("b")
    with pytest.raises(ConfigError, match="class"):
        d.add("b", spec="random:0.1")
    assert _state(d) == snap
    d.apply(device="cpu", audit=False)
    snap = _state(d)
    with pytest.raises(IncompatibleError, match="already deleted"):
        d.add("b", indices=[1])
    assert _state(d) == snap


def test_verify_detects_an_edited_row_and_a_swapped_model(model_dir: ModelDirectory, tmp_path: Path) -> None:
    d = model_dir
    for i in range(3):
        d.add("a", indices=[7 + i])
    assert d.verify().ok
    con = sqlite3.connect(d.path / LEDGER_FILE)
    con.execute("UPDATE requests SET indices = '[20]' WHERE id = 'req-000001'")
    con.commit()
    res = d.verify()
    assert not res.ok and any("does not match its hash" in p for p in res.problems)
    with pytest.raises(LedgerError, match="fails verify"):
        d.add("c", indices=[30])
    with pytest.raises(LedgerError, match="fails verify"):
        d.apply(device="cpu")
    con.execute("UPDATE requests SET indices = '[7]' WHERE id = 'req-000001'")
    con.commit()
    assert d.verify().ok  # undoing the edit restores the chain
    con.execute("DELETE FROM requests WHERE id = 'req-000003'")  # the newest row: caught by the head anchor
    con.commit()
    assert any("rows were removed" in p for p in d.verify().problems)
    con.execute("DELETE FROM requests WHERE id = 'req-000001'")  # a row in the middle breaks the chain
    con.commit()
    con.close()
    assert any("expected seq" in p for p in d.verify().problems)
    # a model file that is not the recorded one
    other = ModelDirectory.create(tmp_path / "o", tiny_model(), dataset="synthetic")
    assert other.verify().ok
    Path(other.model_path).write_bytes(Path(d.model_path).read_bytes())
    assert any("does not match the SHA-256" in p for p in other.verify().problems)


def test_cli_two_apply_processes_never_lose_or_double_apply(model_dir: ModelDirectory) -> None:
    d = model_dir
    for i in range(3):
        d.add(f"s{i}", indices=[10 + i])
    procs = [_cli("request", "apply", str(d.path), "--no-audit") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted(o[0].strip().split(" ")[0] for o in outs)
    assert said == ["applied", "no"], outs  # one applied the batch, the other found nothing pending
    apps = d.ledger.applications_list()
    assert len(apps) == 2 and sorted(apps[1].requests) == ["req-000001", "req-000002", "req-000003"]
    assert set(sisa.load_sisa(d.model_path).deleted_indices()) == {10, 11, 12}
    assert d.verify().ok


def test_cli_kill_during_apply_leaves_the_previous_model_and_pending_requests(model_dir: ModelDirectory) -> None:
    d = model_dir
    d.add("s", indices=[30, 31])
    before = _state(d)
    p = _cli("request", "apply", str(d.path), "--no-audit", env={SLEEP_ENV: "60"})
    marker = d.path / ".apply-sleeping"
    deadline = time.time() + 240
    while not marker.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert marker.exists(), p.communicate()
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert _state(d) == before
    assert [r.status for r in d.ledger.requests_list()] == ["pending"]
    assert d.verify().ok
    marker.unlink()
    res = d.apply(device="cpu", audit=False)  # the next apply takes over (the lock died with the process)
    assert res is not None and res.applied == ["req-000001"]
    assert not list(d.path.glob(".staged-*"))


def test_cli_add_list_verify_and_clear_errors(model_dir: ModelDirectory) -> None:
    d = str(model_dir.path)
    p = _cli("request", "add", d, "--subject", "bob", "--indices", "4,50-52", "--id", "bob-1")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    p = _cli("request", "add", d, "--subject", "bob", "--indices", "4", "--id", "bob-1")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "exists already" in err
    p = _cli("request", "list", d, "--format", "json")
    out, _ = p.communicate(timeout=120)
    listed = json.loads(out)
    assert [r["id"] for r in listed["requests"]] == ["bob-1"] and listed["requests"][0]["indices"] == [4, 50, 51, 52]
    p = _cli("request", "verify", d)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0 and out.startswith("ok")


def test_a_plain_model_applies_with_auto_by_default_or_the_named_method(tmp_path: Path) -> None:
    d = ModelDirectory.create(tmp_path / "p", tiny_model(trained=True), dataset="synthetic")
    d.add("a", indices=[0, 1, 2])
    res = d.apply(device="cpu", audit=False, allow_partial=True)
    assert res is not None and res.method == "auto" and d.verify().ok
    d.add("b", indices=[3, 4])
    res = d.apply("ft", config={"epochs": 1}, device="cpu", audit=False)
    assert res is not None and res.method == "ft" and d.verify().ok
    assert not (tmp_path / "p" / MODEL_FILE).with_suffix(".tmp").exists()


def test_unlearn_verb_audits_without_a_retrained_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnkit import oracle
    from unlearnkit.cli import main
    from unlearnkit.models import save_model

    def no_retraining(*a: object, **k: object) -> None:
        raise AssertionError("unlearn must not train a retrained model")

    monkeypatch.setattr(oracle, "train_or_load", no_retraining)
    ckpt = save_model(tiny_model(trained=True), tmp_path / "mine.safetensors")
    out = tmp_path / "out"
    argv = ["unlearn", str(ckpt), "--dataset", "synthetic", "--forget", "class:1", "--method", "ft"]
    assert main([*argv, "--set", "epochs=1", "--out", str(out), "--device", "cpu"]) == 0
    audit = json.loads((out / "audit.json").read_text())
    u = audit["unlearned"]
    assert {"accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget"} <= set(u)
    assert any(k.startswith("mia_auc_forget") for k in u)  # population MIA: forget vs held-out test
    assert "relative_weight_change" in audit["change"] and (out / "unlearned.safetensors").is_file()
    assert audit["held_out_check"]["verdict"] in ("looks held out", "still remembered")  # class:1: judged vs 0 %
    assert main([*argv, "--set", "epochz=1", "--out", str(tmp_path / "o2")]) == 2  # bad option: clear error
    assert not (tmp_path / "o2").exists()


def test_run_no_noise_floor_trains_one_retrained_model(tmp_path: Path) -> None:
    from unlearnkit.cli import main

    out = tmp_path / "run"
    argv = ["run", "--dataset", "synthetic", "--model", "small_cnn", "--forget", "class:1", "--method", "ft"]
    assert main([*argv, "--set", "epochs=1", "--no-noise-floor", "--out", str(out), "--device", "cpu"]) == 0
    record = json.loads((out / "record.json").read_text())
    assert record.get("noise_floor_avg_gap") is None and "retrained_2" not in record["models"]


def test_cli_train_shards_writes_a_sisa_model_that_requests_apply_to(tmp_path: Path) -> None:
    """`unlearnkit train --shards` → a SISA model directory; request init/add/apply delete exactly from it."""
    from unlearnkit.cli import main

    out = tmp_path / "sisa"
    argv = ["train", "--dataset", "synthetic", "--model", "small_cnn", "--model-arg", "width=8", "--epochs", "2"]
    assert main([*argv, "--shards", "2", "--forget", "class:1", "--out", str(out)]) == 2  # clear error, no files
    assert not out.exists()
    assert main([*argv, "--slices", "2", "--out", str(out)]) == 2  # --slices without --shards
    assert main([*argv, "--shards", "2", "--slices", "2", "--no-cache", "--device", "cpu", "--out", str(out)]) == 0
    ens = sisa.load_sisa(out / MODEL_FILE)
    assert (ens.spec.shards, ens.spec.slices, ens.spec.dataset, ens.spec.recipe["epochs"]) == (2, 2, "synthetic", 2)
    assert main(["request", "init", str(out), "--dataset", "synthetic"]) == 0
    assert main(["request", "add", str(out), "--subject", "bob", "--indices", "5,6"]) == 0
    assert main(["request", "apply", str(out), "--no-audit"]) == 0
    assert set(sisa.load_sisa(out / MODEL_FILE).deleted_indices()) == {5, 6}
    assert main(["request", "verify", str(out)]) == 0


def test_a_deletion_that_changed_nothing_leaves_the_requests_pending_unless_allowed(tmp_path: Path) -> None:
    """Issue 24 item 7: an apply whose run returned the input model is refused (exit 1 on the CLI) and changes
    nothing; --allow-partial keeps it, with the outcome in the ledger's record."""
    from unlearnkit.cli import main
    from unlearnkit.errors import IncompleteUnlearningError

    d = ModelDirectory.create(tmp_path / "p", tiny_model(trained=True), dataset="synthetic")
    d.add("a", indices=[0, 1, 2])
    before = _state(d)
    with pytest.raises(IncompleteUnlearningError, match=r"no_op.*--allow-partial"):
        d.apply("ft", config={"epochs": 1, "lr": 0.0}, device="cpu", audit=False)
    assert _state(d) == before and [r.status for r in d.ledger.requests_list()] == ["pending"]
    argv = ["request", "apply", str(tmp_path / "p"), "--method", "ft", "--set", "epochs=1", "--set", "lr=0"]
    assert main([*argv, "--no-audit"]) == 1
    assert _state(d) == before
    assert main([*argv, "--no-audit", "--allow-partial"]) == 0
    assert [r.status for r in d.ledger.requests_list()] == ["applied"] and d.verify().ok
    record = d.ledger.applications_list()[-1]
    assert "no_op" in json.dumps(record.__dict__, default=str)


def test_unlearn_verb_refuses_a_no_op_and_writes_nothing_unless_allowed(tmp_path: Path) -> None:
    from unlearnkit.cli import main
    from unlearnkit.models import save_model

    ckpt = save_model(tiny_model(trained=True), tmp_path / "mine.safetensors")
    argv = ["unlearn", str(ckpt), "--dataset", "synthetic", "--forget", "class:1", "--method", "ft"]
    argv += ["--set", "epochs=1", "--set", "lr=0", "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "o1")]) == 1
    assert not (tmp_path / "o1").exists()
    assert main([*argv, "--out", str(tmp_path / "o2"), "--allow-partial"]) == 0
    assert json.loads((tmp_path / "o2" / "audit.json").read_text())["run"]["outcome"] == "no_op"
