"""SISA (methods.md §13.1): exact deletion by retraining only the affected shards, on the synthetic data."""

from __future__ import annotations

import copy

import pytest
import torch

from unlearnkit import sisa
from unlearnkit.errors import IncompatibleError
from unlearnkit.testing import tiny_bundle, tiny_data, tiny_model
from unlearnkit.training import Recipe

RECIPE = Recipe(epochs=2, batch_size=16, lr=0.05)


@pytest.fixture(scope="module")
def trained() -> tuple[sisa.SISAEnsemble, object]:
    b = tiny_bundle()
    ens = sisa.train_sisa(tiny_model(), b.train, shards=3, slices=2, recipe=RECIPE, seed=1, dataset="synthetic")
    return ens, b


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage_epochs_follow_the_allocation() -> None:
    assert sisa.stage_epochs(4, 1) == [4]
    assert sisa.stage_epochs(10, 4) == [4, 4, 4, 4]  # avg = 2·10/5 = 4
    assert sisa.stage_epochs(2, 4) == [0, 1, 1, 1]  # avg = 0.8: floor(r·avg) = 0, 1, 2, 3


def test_partition_is_disjoint_and_balanced() -> None:
    shard, sl = sisa.partition(100, 4, 5, seed=0)
    counts = torch.bincount(shard * 5 + sl, minlength=20)
    assert counts.min() == counts.max() == 5
    assert torch.equal(shard, sisa.partition(100, 4, 5, seed=0)[0])
    assert not torch.equal(shard, sisa.partition(100, 4, 5, seed=1)[0])


def test_deletion_is_bit_identical_to_training_from_scratch(trained) -> None:
    ens0, b = trained
    ens = copy.deepcopy(ens0)
    # one point in a later slice (restart from a checkpoint) and one in a first slice (restart from the init)
    late = int(torch.nonzero((ens.shard_of == 0) & (ens.slice_of == 1))[0])
    early = int(torch.nonzero((ens.shard_of == 1) & (ens.slice_of == 0))[0])
    report = ens.delete(b.train, [late, early])
    assert report.shards == {0: 2, 1: 1}
    assert report.checkpoints_reused == 1 and report.missing_checkpoints == 0
    assert 0 < report.samples_processed < report.full_retrain_samples
    # only the affected shards changed
    assert _same(ens.members[2], ens0.members[2])
    assert not _same(ens.members[0], ens0.members[0]) and not _same(ens.members[1], ens0.members[1])
    # no member's training list holds a deleted point
    for s in range(3):
        kept = set(ens.training_indices(s).tolist())
        assert late not in kept and early not in kept
    scratch = sisa.oracle(ens, b.train)
    assert _same(ens, scratch)
    x = b.test.subset(range(16)).images.float() / 255
    assert torch.equal(ens(x), scratch(x))


def test_a_missing_checkpoint_falls_back_and_stays_exact(trained) -> None:
    ens0, b = trained
    ens = copy.deepcopy(ens0)
    late = int(torch.nonzero((ens.shard_of == 2) & (ens.slice_of == 1))[0])
    report = ens.delete(b.train, [late], cache=None)  # no checkpoints: the shard restarts from its init
    assert report.shards == {2: 2} and report.checkpoints_reused == 0
    assert _same(ens, sisa.oracle(ens, b.train))


def test_class_wise_request_and_a_stream(trained) -> None:
    ens0, b = trained
    ens = copy.deepcopy(ens0)
    cls = sisa.class_indices(b.train, [1], exclude=ens.deleted)
    first = ens.delete(b.train, cls[:3])
    rest = sisa.delete_stream(ens, b.train, [cls[3:10], cls[10:]])
    assert first.samples_processed > 0 and len(rest.reports) == 2
    assert set(rest.reports[-1].shards) == {0, 1, 2}  # a whole class touches every shard
    assert sorted(ens.deleted_indices()) == cls
    assert _same(ens, sisa.oracle(ens, b.train))


def test_bad_requests_change_nothing(trained) -> None:
    ens0, b = trained
    ens = copy.deepcopy(ens0)
    with pytest.raises(IncompatibleError, match="out of range"):
        ens.delete(b.train, [len(b.train)])
    with pytest.raises(IncompatibleError, match="selects no"):
        ens.delete(b.train, [])
    ens.delete(b.train, [0])
    snap = copy.deepcopy(ens)
    with pytest.raises(IncompatibleError, match="already deleted"):
        ens.delete(b.train, [1, 0])
    assert _same(ens, snap)


def test_aggregation_outputs_log_probabilities_and_ties_go_low() -> None:
    spec = sisa.SISASpec(2, 1, RECIPE.to_dict(), 0, "vote", None, num_classes=3)

    class Fixed(torch.nn.Module):
        def __init__(self, k: int) -> None:
            super().__init__()
            self.k = k

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(torch.full((len(x),), self.k), 3).float() * 5

    ens = sisa.SISAEnsemble([Fixed(2), Fixed(1)], torch.zeros(4), torch.zeros(4), spec)
    out = ens(torch.zeros(2, 1))
    assert torch.allclose(out.exp().sum(1), torch.ones(2))
    assert out.argmax(1).tolist() == [1, 1]  # a 1–1 tie between classes 1 and 2 goes to 1
    logits = torch.stack([m(torch.zeros(2, 1)) for m in ens.members])
    assert torch.equal(ens.aggregate(logits), out)  # the members' logits aggregated as forward does
    ens.spec = sisa.SISASpec(2, 1, RECIPE.to_dict(), 0, "softmax", None, num_classes=3)
    soft = ens(torch.zeros(2, 1))
    assert torch.equal(ens.aggregate(logits), soft) and torch.equal(ens.aggregate(logits, "vote"), out)
    assert torch.allclose(soft.exp().sum(1), torch.ones(2))
    assert torch.isfinite(out).all() and torch.isfinite(soft).all()


def test_checkpoint_round_trip(trained, tmp_path) -> None:
    ens, _ = trained
    path = sisa.save_sisa(ens, tmp_path / "model.safetensors")
    assert sisa.is_sisa_checkpoint(path)
    back = sisa.load_sisa(path)
    assert _same(back, ens) and back.spec == ens.spec


def test_registered_method_deletes_the_split_exactly(trained) -> None:
    from unlearnkit.methods import create_method
    from unlearnkit.runner import run_method

    ens, b = trained
    data = tiny_data("random:0.05", seed=2)
    res = run_method(create_method("sisa"), ens, data, device="cpu")
    out = res.model
    assert sorted(out.deleted_indices()) == sorted(int(i) for i in data.split.forget)
    assert ens.deleted.sum() == 0  # the input was copied
    assert out.last_deletion is not None and res.history[-1]["samples_processed"] > 0
    assert _same(out, sisa.oracle(out, b.train))
