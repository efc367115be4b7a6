"""Issue 24, SISA: no stage silently gets 0 epochs, the thread count of bit-identity is recorded and pinned, and
``verify`` compares the ledger's deleted set with the SISA model's own deleted mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unlearnkit import sisa
from unlearnkit.errors import ConfigError
from unlearnkit.ledger import ModelDirectory, file_sha256
from unlearnkit.testing import tiny_bundle, tiny_model
from unlearnkit.training import Recipe


def test_cli_refuses_stages_with_zero_epochs_before_training(cli, tmp_path: Path) -> None:
    out = tmp_path / "s"
    argv = ["train", "--dataset", "digits", "--model", "small_cnn", "--shards", "1", "--slices", "10"]
    r = cli(*argv, "--epochs", "1", "--out", str(out), "--no-cache")
    assert r.code == 2 and "0 epochs" in r.err and "never be trained on" in r.err and "--epochs" in r.err, r.err
    assert "at least 6" in r.err and not out.exists()


def test_train_sisa_refuses_zero_epoch_stages_and_accepts_the_minimum() -> None:
    assert sisa.min_epochs(10) == 6 and min(sisa.stage_epochs(6, 10)) == 1
    assert sisa.min_epochs(1) == 1 and sisa.min_epochs(2) == 2
    with pytest.raises(ConfigError, match="0 epochs"):
        sisa.train_sisa(tiny_model(), tiny_bundle().train, shards=1, slices=4, recipe=Recipe(epochs=2), cache=None)


def test_threads_are_recorded_and_deletions_and_the_oracle_run_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from unlearnkit import training

    seen: list[int] = []
    real_train = training.train

    def spy(*a, **k):  # the thread count each stage trains with
        seen.append(torch.get_num_threads())
        return real_train(*a, **k)

    monkeypatch.setattr(training, "train", spy)
    before = torch.get_num_threads()
    b = tiny_bundle()
    ens = sisa.train_sisa(
        tiny_model(), b.train, shards=2, slices=1, recipe=Recipe(epochs=1, batch_size=32), cache=None, threads=1
    )
    assert ens.spec.threads == 1 and set(seen) == {1} and torch.get_num_threads() == before
    seen.clear()
    torch.set_num_threads(2)
    try:
        report = ens.delete(b.train, [0, 1], cache=None)
        assert report.threads == 1 and set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        scratch = sisa.oracle(ens, b.train)
        assert set(seen) == {1} and scratch.spec.threads == 1
    finally:
        torch.set_num_threads(before)
    sa, sb = ens.state_dict(), scratch.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_threads_survive_the_checkpoint(tmp_path: Path) -> None:
    ens = sisa.train_sisa(tiny_model(), tiny_bundle().train, shards=2, recipe=Recipe(epochs=1), cache=None)
    assert ens.spec.threads == torch.get_num_threads()
    back = sisa.load_sisa(sisa.save_sisa(ens, tmp_path / "m.safetensors"))
    assert back.spec.threads == ens.spec.threads


@pytest.fixture(scope="module")
def small_ensemble() -> sisa.SISAEnsemble:
    return sisa.train_sisa(tiny_model(), tiny_bundle().train, shards=2, recipe=Recipe(epochs=1, batch_size=32))


def test_verify_compares_the_ledger_with_the_sisa_mask(tmp_path: Path, small_ensemble: sisa.SISAEnsemble) -> None:
    """A consistently chained application whose model deleted more than its requests is reported by verify."""

    d = ModelDirectory.create(tmp_path / "m", small_ensemble, dataset="synthetic")
    d.add("alice", indices=[5, 6])
    d.apply(device="cpu", audit=False)
    assert d.verify().ok and set(sisa.load_sisa(d.model_path).deleted_indices()) == {5, 6}
    # a forged application: chained correctly (no key), model file matching it, but 7 deleted outside the ledger
    ens = sisa.load_sisa(d.model_path)
    ens.delete(tiny_bundle().train, [7])
    sisa.save_sisa(ens, tmp_path / "forged.safetensors")
    before = d.current_sha()
    with d.ledger.write() as conn:
        d.ledger.insert_application(
            conn,
            requests=[],
            method="sisa",
            config={},
            model_before=before,
            model_after=file_sha256(tmp_path / "forged.safetensors"),
            audit={},
        )
    d._write_head()
    (tmp_path / "forged.safetensors").replace(d.model_path)
    v = d.verify()
    assert not v.ok and any("deleted mask" in p and "[7]" in p for p in v.problems), v.problems


def test_a_sisa_model_registered_with_deletions_verifies(tmp_path: Path, small_ensemble: sisa.SISAEnsemble) -> None:
    import copy

    ens = copy.deepcopy(small_ensemble)
    ens.delete(tiny_bundle().train, [1, 2])
    d = ModelDirectory.create(tmp_path / "m", ens, dataset="synthetic")
    assert d.verify().ok, d.verify().problems
    assert d._genesis().config["deleted_before"] == [1, 2]
