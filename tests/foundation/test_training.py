import pytest
import torch

from unlearnkit.data import load_dataset, split_for
from unlearnkit.errors import ConfigError
from unlearnkit.models import model_for_dataset
from unlearnkit.oracle import train_or_load
from unlearnkit.training import Recipe, accuracy, default_recipe, lr_factor, train

FAST = Recipe(epochs=3, batch_size=32, lr=0.05)


def _weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_same_seed_identical_weights_and_metrics():
    b = load_dataset("synthetic")
    out = []
    for _ in range(2):
        torch.manual_seed(5)
        m = model_for_dataset("small_cnn", b.info, width=8)
        train(m, b.train, Recipe(epochs=2, batch_size=32, lr=0.05, augment=True), seed=5, augment=b.info.augment)
        out.append((_weights(m), accuracy(m, b.test)))
    (w1, a1), (w2, a2) = out
    assert a1 == a2 and all(torch.equal(w1[k], w2[k]) for k in w1)


def test_different_seed_differs():
    b = load_dataset("synthetic")
    ws = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        m = model_for_dataset("small_cnn", b.info, width=8)
        train(m, b.train, FAST, seed=seed)
        ws.append(_weights(m))
    assert not torch.equal(ws[0]["head.weight"], ws[1]["head.weight"])


def test_digits_default_recipe_reaches_90(digits_original):
    t = digits_original.trained  # train_or_load("digits", "small_cnn", seed=0), shared by the test run
    assert t.meta["accuracy_test"] >= 90 and t.meta["role"] == "original"


def test_cache_returns_same_model(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path))
    b = load_dataset("synthetic")
    s = split_for(b, "class:1", 0)
    first = train_or_load(b, "small_cnn", s, seed=0, recipe=FAST, model_kwargs={"width": 8})
    second = train_or_load(b, "small_cnn", s, seed=0, recipe=FAST, model_kwargs={"width": 8})
    assert not first.from_cache and second.from_cache and first.meta["role"] == "retrained"
    assert all(
        torch.equal(a, c)
        for a, c in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True)
    )
    assert second.meta["split_sha256"] == s.sha256 and second.meta["accuracy_forget"] is not None
    other = train_or_load(b, "small_cnn", s, seed=1, recipe=FAST, model_kwargs={"width": 8})
    assert not other.from_cache


def test_retrained_never_sees_forget_set(monkeypatch):
    """The oracle trains on retain only: its training set excludes every forget index."""
    import unlearnkit.oracle as oracle

    seen = {}

    def spy(model, dataset, recipe, **kw):
        seen["n"] = len(dataset)
        seen["labels"] = set(dataset.targets.tolist())
        return train(model, dataset, Recipe(epochs=1, batch_size=32), **kw)

    monkeypatch.setattr(oracle, "train", spy)
    b = load_dataset("synthetic")
    s = split_for(b, "class:2", 0)
    oracle.train_or_load(b, "small_cnn", s, seed=0, use_cache=False, model_kwargs={"width": 8})
    assert seen["n"] == len(s.retain) and 2 not in seen["labels"]


def test_recipe_validation():
    with pytest.raises(ConfigError):
        Recipe(epochs=0)
    with pytest.raises(ConfigError):
        Recipe(optimizer="lbfgs")


def test_schedule_shape():
    assert lr_factor("constant", 5, 10) == 1.0
    assert lr_factor("cosine", 0, 10) == pytest.approx(1.0) and lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    vals = [lr_factor("onecycle", i, 100) for i in range(100)]
    assert max(vals) == pytest.approx(1.0, abs=0.02) and vals[0] < 0.2 and vals[-1] < 0.01


def test_default_recipes_exist():
    assert default_recipe("fashion_mnist", "small_cnn").epochs >= 10
    assert default_recipe("digits", "unknown_model") == default_recipe("digits", "small_cnn")
