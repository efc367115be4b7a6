"""Issue 24: the ledger's failures of the operating system and the database, through the CLI. A read-only model
directory, a full disk while the new model is written or at the ledger's commit, a damaged or empty ledger
file, a database URL that cannot be used, a damaged Optuna study: each ends in one line that names the problem
and the fix, a non-zero exit, and the directory (model bytes, ledger rows, files) exactly as before.

Faults are injected with the bad-inputs sweep's `bad_inputs_faults.inject` (root ignores chmod); the compute of
an application is stubbed here (the sweep runs it for real)."""

from __future__ import annotations

import hashlib
import importlib.util
import sqlite3
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "bad_inputs_faults", Path(__file__).parents[1] / "foundation" / "bad_inputs_faults.py"
)
faults = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(faults)  # type: ignore[union-attr]


def _state(d: Path) -> dict[str, str]:
    """Every file of a model directory (but the lock) by SHA-256: the previous state a failure must leave."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(d.iterdir())
        if p.is_file() and p.name != ".apply.lock"
    }


def _rows(d: Path) -> tuple[list[tuple[str, str]], list[str]]:
    from unlearnkit.ledger import ModelDirectory

    led = ModelDirectory(d).ledger
    return [(r.id, r.status) for r in led.requests_list()], [a.method for a in led.applications_list()]


@pytest.fixture
def pending_dir(digits_dir: Path, cli) -> Path:
    r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", "3,5", "--id", "r-1")
    assert r.code == 0, r.err
    return digits_dir


@pytest.fixture
def fake_compute(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """`unlearn_batch` replaced by a quick perturbation of the model (counts its calls)."""
    import torch

    from unlearnkit.jobs import unlearn as unlearn_mod
    from unlearnkit.jobs.checkpoints import load_checkpoint

    calls: list[int] = []

    def fake(model_path, **kw):
        calls.append(1)
        model = load_checkpoint(model_path)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return unlearn_mod.BatchResult(model, "ft", {}, {})

    monkeypatch.setattr(unlearn_mod, "unlearn_batch", fake)
    return calls


def _one_line(r, code: int, *fragments: str) -> None:
    assert r.code == code and "Traceback" not in r.err and len(r.err.strip().splitlines()) == 1, (r.code, r.err)
    for f in fragments:
        assert f.lower() in r.err.lower(), (f, r.err)


# ------------------------------------------------------------------------------------------------ read-only
def test_a_read_only_directory_is_refused_before_compute_and_can_still_be_verified(pending_dir, cli, fake_compute):
    before, rows = _state(pending_dir), _rows(pending_dir)
    with faults.inject(f"read_only:{pending_dir}"):
        apply = cli("request", "apply", str(pending_dir), "--method", "ft", "--no-audit", "--device", "cpu")
        add = cli("request", "add", str(pending_dir), "--subject", "s", "--indices", "7")
        verify = cli("request", "verify", str(pending_dir))
        listed = cli("request", "list", str(pending_dir))
    _one_line(apply, 2, "read-only", "writable")
    _one_line(add, 2, "read-only", "writable")
    assert not fake_compute  # refused before any compute
    assert verify.code == 0 and listed.code == 0 and "r-1" in listed.out, (verify.err, listed.err)
    assert _state(pending_dir) == before and _rows(pending_dir) == rows


def test_init_in_a_read_only_directory_is_refused_and_writes_no_ledger(tmp_path, digits_untrained_ckpt, cli):
    import shutil

    d = tmp_path / "new"
    d.mkdir()
    shutil.copy(digits_untrained_ckpt, d / "model.safetensors")
    with faults.inject(f"read_only:{d}"):
        r = cli("request", "init", str(d), "--dataset", "digits")
    _one_line(r, 2, "read-only", "writable")
    assert sorted(p.name for p in d.iterdir()) == ["model.safetensors"]


# ------------------------------------------------------------------------------------------------ full disk
def test_a_full_disk_while_the_new_model_is_written_leaves_model_and_requests(pending_dir, cli, fake_compute):
    before, rows = _state(pending_dir), _rows(pending_dir)
    with faults.inject("disk_full_model"):
        r = cli("request", "apply", str(pending_dir), "--method", "ft", "--no-audit", "--device", "cpu")
    _one_line(r, 1, "no space left", "free space", "pending")
    assert fake_compute and _state(pending_dir) == before and _rows(pending_dir) == rows  # no half-written file
    r = cli("request", "apply", str(pending_dir), "--method", "ft", "--no-audit", "--device", "cpu")
    assert r.code == 0 and _rows(pending_dir)[0] == [("r-1", "applied")], r.err  # space again: it completes


def test_a_full_disk_at_the_ledger_commit_changes_nothing(pending_dir, cli, fake_compute):
    before, rows = _state(pending_dir), _rows(pending_dir)
    with faults.inject("disk_full_commit"):
        apply = cli("request", "apply", str(pending_dir), "--method", "ft", "--no-audit", "--device", "cpu")
        add = cli("request", "add", str(pending_dir), "--subject", "s", "--indices", "7")
    _one_line(apply, 1, "disk", "full", "free space")
    _one_line(add, 1, "disk", "full", "free space")
    assert _state(pending_dir) == before and _rows(pending_dir) == rows


def test_init_that_fails_at_its_commit_leaves_no_ledger_behind(tmp_path, digits_untrained_ckpt, cli):
    import shutil

    d = tmp_path / "new"
    d.mkdir()
    shutil.copy(digits_untrained_ckpt, d / "model.safetensors")
    with faults.inject("disk_full_commit"):
        r = cli("request", "init", str(d), "--dataset", "digits")
    _one_line(r, 2, "full", "free space")  # 2: it failed creating the tables, before any registration
    assert sorted(p.name for p in d.iterdir()) == ["model.safetensors"]
    assert cli("request", "init", str(d), "--dataset", "digits").code == 0  # space again: it registers


def test_a_full_disk_after_the_commit_says_the_work_is_done_and_only_the_anchor_lags(pending_dir, cli, fake_compute):
    with faults.inject("disk_full_anchor"):
        apply = cli("request", "apply", str(pending_dir), "--method", "ft", "--no-audit", "--device", "cpu")
        add = cli("request", "add", str(pending_dir), "--subject", "s", "--indices", "7", "--id", "r-2")
    _one_line(apply, 1, "r-1 were applied", "ledger.head", "no space left")
    _one_line(add, 1, "r-2 was recorded", "ledger.head")
    assert _rows(pending_dir)[0] == [("r-1", "applied"), ("r-2", "pending")]
    assert not list(pending_dir.glob(".staged-*"))  # the new model is in place
    assert cli("request", "verify", str(pending_dir)).code == 0  # the anchor lags, it does not lie


# ------------------------------------------------------------------------------------------------ ledger files
def test_an_empty_ledger_file_is_not_taken_for_a_new_ledger(tmp_path, digits_untrained_ckpt, cli):
    import shutil

    d = tmp_path / "m"
    d.mkdir()
    shutil.copy(digits_untrained_ckpt, d / "model.safetensors")
    (d / "ledger.db").write_bytes(b"")
    for argv in (("init", str(d), "--dataset", "digits"), ("add", str(d), "--subject", "s", "--indices", "3")):
        r = cli("request", *argv)
        _one_line(r, 2, "empty", "backup")
    assert sorted(p.name for p in d.iterdir()) == ["ledger.db", "model.safetensors"]
    assert (d / "ledger.db").read_bytes() == b""


def test_a_ledger_that_is_not_a_database_names_the_fix(digits_dir, cli):
    (digits_dir / "ledger.db").write_text("not a database\n")
    r = cli("request", "verify", str(digits_dir))
    _one_line(r, 2, "not an SQLite database", "backup")


# ------------------------------------------------------------------------------------------------ --db URLs
@pytest.mark.parametrize(
    ("url", "module", "package"),
    [
        ("postgresql://u:s3cret@127.0.0.1:1/x", "psycopg", "psycopg[binary]"),
        ("postgresql+psycopg2://u:s3cret@127.0.0.1:1/x", "psycopg2", "psycopg2-binary"),
        ("mysql://u:s3cret@127.0.0.1:1/x", "MySQLdb", "mysqlclient"),
    ],
)
def test_a_missing_driver_names_its_package_and_hides_the_password(digits_dir, cli, url, module, package):
    with faults.inject(f"no_module:{module}"):
        r = cli("request", "add", str(digits_dir), "--subject", "s", "--indices", "3", "--db", url)
    _one_line(r, 2, "driver", f"pip install {package}", "--db")
    assert "s3cret" not in r.err


def test_a_refused_connection_names_the_server_and_hides_the_password(digits_dir, cli):
    pytest.importorskip("psycopg2")
    before = _state(digits_dir)
    for action in ("add", "apply", "verify"):
        argv = ["request", action, str(digits_dir), "--db", "postgresql+psycopg2://u:s3cret@127.0.0.1:1/x"]
        r = cli(*argv, *(["--subject", "s", "--indices", "3"] if action == "add" else []))
        _one_line(r, 2, "refused", "--db", "server")
        assert "s3cret" not in r.err and "***" in r.err
    assert _state(digits_dir) == before


# ------------------------------------------------------------------------------------------------ tune
def test_a_damaged_study_file_is_refused_before_training_and_left_as_it_was(tmp_path):
    optuna = pytest.importorskip("optuna")
    from unlearnkit.errors import ConfigError
    from unlearnkit.tune import check_study

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    good = tmp_path / "good.db"
    st = optuna.create_study(study_name="s", storage=f"sqlite:///{good}")
    st.optimize(lambda t: t.suggest_float("lr", 0.001, 0.1), n_trials=3)
    dropped = tmp_path / "dropped.db"
    dropped.write_bytes(good.read_bytes())
    with sqlite3.connect(dropped) as c:
        c.execute("DROP TABLE trial_values")
    raw = dropped.read_bytes()
    with pytest.raises(ConfigError, match=r"damaged|missing") as info:
        check_study(f"sqlite:///{dropped}", "s", None)
    assert "trial_values" in str(info.value) and "--storage" in str(info.value)
    assert dropped.read_bytes() == raw  # optuna did not re-create the table in the user's file
    check_study(f"sqlite:///{good}", "s", None)  # an intact study passes
