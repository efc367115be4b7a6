"""Issue 24, integrity limits: an HMAC key for the chain and the anchor, an external anchor (``--expect``), a copy
without ``ledger.head`` adopted on record, and the model-directory guards (no overwrite, no foreign model)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from unlearnkit.errors import ConfigError, IncompatibleError, UnlearnkitError
from unlearnkit.ledger import HEAD_FILE, LEDGER_FILE, MODEL_FILE, ModelDirectory, file_sha256
from unlearnkit.ledger_chain import _canon, _row_hash
from unlearnkit.testing import tiny_model


def _plain(tmp_path: Path, **kw) -> ModelDirectory:
    d = ModelDirectory.create(tmp_path / "m", tiny_model(), dataset="synthetic", **kw)
    d.add("alice", indices=[1, 2], request_id="r-1")
    return d


def _forge_row(d: ModelDirectory, key: bytes | None) -> None:
    """Append a correctly chained request row the way an attacker with write access (and ``key``) would."""
    with d.ledger.engine.connect() as conn:
        seq, prev = d.ledger._tail(conn)
    row = {
        "seq": seq + 1,
        "id": "forged",
        "subject": "nobody",
        "indices": _canon([5]),
        "spec": None,
        "received": "2026-01-01T00:00:00+00:00",
        "prev_hash": prev,
    }
    db = sqlite3.connect(d.path / LEDGER_FILE)
    cols = [*row, "status", "row_hash"]
    vals = [*row.values(), "pending", _row_hash("requests", row, key)]
    db.execute(f"INSERT INTO requests ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})", vals)
    db.commit()
    db.close()
    d._write_head()  # the attacker rewrites the anchor too (with the key, when the directory holds it)


def test_without_a_key_a_chained_forgery_passes_and_with_a_key_it_fails(tmp_path: Path) -> None:
    d = _plain(tmp_path / "plain")
    _forge_row(d, key=None)
    assert d.verify().ok  # the documented limit of an unkeyed ledger: consistency, not authorship

    k = _plain(tmp_path / "keyed", key="s3cret")
    assert k.verify().ok and k.ledger.keyed()
    _forge_row(ModelDirectory(k.path), key=None)  # an attacker without the key
    v = ModelDirectory(k.path, key="s3cret").verify()
    assert not v.ok and any("does not match its hash" in p for p in v.problems), v.problems


def test_a_keyed_ledger_needs_its_key_and_a_rewritten_anchor_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("UNLEARNKIT_LEDGER_KEY", "k1")
    d = _plain(tmp_path)
    assert json.loads((d.path / HEAD_FILE).read_text())["mac"]
    monkeypatch.delenv("UNLEARNKIT_LEDGER_KEY")
    v = ModelDirectory(d.path).verify()
    assert not v.ok and "UNLEARNKIT_LEDGER_KEY" in v.problems[0]
    assert not ModelDirectory(d.path, key="other").verify().ok
    head = json.loads((d.path / HEAD_FILE).read_text())
    (d.path / HEAD_FILE).write_text(json.dumps({"seq": head["seq"], "row_hash": head["row_hash"]}))
    v = ModelDirectory(d.path, key="k1").verify()
    assert any("not written with the ledger key" in p for p in v.problems), v.problems


def test_expect_catches_a_directory_rolled_back_to_an_older_copy(tmp_path: Path, cli) -> None:
    d = _plain(tmp_path)
    old = tmp_path / "old"
    shutil.copytree(d.path, old)
    d.add("bob", indices=[3])
    kept = d.head_hash()  # what the user keeps elsewhere
    shutil.rmtree(d.path)
    shutil.copytree(old, d.path)  # the rollback: a consistent, older directory
    assert d.verify().ok
    r = cli("request", "verify", str(d.path), "--expect", kept)
    assert r.code == 1 and "no row with hash" in r.err, r.err
    r = cli("request", "verify", str(d.path), "--expect", ModelDirectory(d.path).head_hash()[:16])
    assert r.code == 0 and "ledger head" in r.out, r.err


def test_adopt_rebuilds_a_missing_anchor_on_record(tmp_path: Path, cli) -> None:
    d = _plain(tmp_path)
    (d.path / HEAD_FILE).unlink()
    r = cli("request", "add", str(d.path), "--subject", "x", "--indices", "4")
    assert r.code == 2 and "--adopt" in r.err
    r = cli("request", "init", str(d.path), "--adopt")
    assert r.code == 0, r.err
    assert ModelDirectory(d.path).verify().ok
    assert [a.method for a in d.ledger.applications_list()] == ["init", "adopt"]


def test_train_out_into_a_registered_directory_is_refused(tmp_path: Path, cli) -> None:
    d = _plain(tmp_path)
    before = file_sha256(d.model_path)
    r = cli("train", "--dataset", "synthetic", "--model", "small_cnn", "--out", str(d.path))
    assert r.code == 2 and "registered model directory" in r.err
    assert file_sha256(d.model_path) == before and d.verify().ok


def test_init_refuses_a_text_file_and_another_datasets_model(tmp_path: Path) -> None:
    from unlearnkit.models import create_model, save_model

    t = tmp_path / "t"
    t.mkdir()
    (t / MODEL_FILE).write_text("not a model")
    with pytest.raises(UnlearnkitError, match="corrupt"):
        ModelDirectory.create(t, dataset="synthetic")
    assert not (t / LEDGER_FILE).exists()
    f = tmp_path / "f"
    f.mkdir()
    save_model(create_model("small_cnn", 10, 1, 28), f / MODEL_FILE)
    with pytest.raises(IncompatibleError, match="not a model of 'digits'"):
        ModelDirectory.create(f, dataset="digits")
    assert not (f / LEDGER_FILE).exists()


def test_apply_checks_method_and_seed_before_looking_for_pending_requests(tmp_path: Path) -> None:
    d = ModelDirectory.create(tmp_path / "m", tiny_model(), dataset="synthetic")
    with pytest.raises(UnlearnkitError, match="nosuch"):
        d.apply("nosuch")
    with pytest.raises(ConfigError, match="2\\^63"):
        d.apply("ft", seed=-1)
    assert d.apply("ft") is None  # nothing pending, valid inputs


def test_add_waiting_on_the_lock_says_so(tmp_path: Path) -> None:
    import fcntl
    import threading

    d = _plain(tmp_path)
    said: list[str] = []
    d.on_wait = said.append
    with open(d.path / ".apply.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        t = threading.Thread(target=d.add, args=("carol",), kwargs={"indices": [6]})
        t.start()
        t.join(timeout=2)
        assert t.is_alive() and said and "waiting" in said[0]
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    t.join(timeout=30)
    assert [r.id for r in d.ledger.requests_list()][-1] == "req-000002"
