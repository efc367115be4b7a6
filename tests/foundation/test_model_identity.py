"""One model identity: for the same weights, the record's model hash, the cache entry's and the ledger's agree
(`unlearnkit.cache.model_sha256`), and the documented byte format gives that value."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from unlearnkit.cache import checkpoint_sha256, model_sha256
from unlearnkit.data import split_for
from unlearnkit.evaluation import evaluate
from unlearnkit.oracle import train_or_load
from unlearnkit.testing import tiny_bundle
from unlearnkit.training import Recipe


def test_record_cache_and_ledger_agree_on_the_model_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sqlalchemy")
    from unlearnkit.ledger import ModelDirectory

    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    bundle = tiny_bundle()
    trained = train_or_load(bundle, "small_cnn", None, seed=0, recipe=Recipe(epochs=1), device="cpu")
    assert trained.path is not None and not trained.from_cache
    entry = json.loads((trained.path / "meta.json").read_text())["weights_sha256"]
    in_file = checkpoint_sha256(trained.path / "model.safetensors")

    record = evaluate(trained.model, bundle, split_for(bundle, "class:1", 0), device="cpu")
    in_record = record["models"]["unlearned"]["sha256"]

    d = ModelDirectory.create(tmp_path / "m", trained.model, dataset="synthetic")
    in_ledger = d.ledger.applications_list()[0].config["model_sha256"]
    assert in_record == entry == in_file == in_ledger == model_sha256(trained.model)

    d.add("a", indices=[3, 4])
    res = d.apply("ft", config={"epochs": 1}, device="cpu", audit=False)
    assert res is not None
    from unlearnkit.jobs.checkpoints import load_checkpoint

    after = load_checkpoint(d.model_path)
    assert res.audit["model_sha256"] == model_sha256(after) != in_ledger
    assert (
        evaluate(after, bundle, split_for(bundle, "class:1", 0), device="cpu")["models"]["unlearned"]["sha256"]
        == (res.audit["model_sha256"])
    )


def test_the_documented_byte_format() -> None:
    """name|dtype|shape| then the raw bytes, tensors in sorted name order (the docstring of `unlearnkit.cache`)."""
    net = torch.nn.Linear(3, 2)
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode() + t.detach().contiguous().numpy().tobytes())
    assert model_sha256(net) == h.hexdigest()
