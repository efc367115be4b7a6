"""Weight filtering (WF-Net): wrapper ↔ fold equivalence, BatchNorm handling, forgetting on digits, caching."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import unlearnkit
from unlearnkit.bench.filter_analysis import (
    class_similarity,
    deletion_curve,
    evaluate_all_classes,
    save_filter_maps,
    top_units,
)
from unlearnkit.cache import model_sha256
from unlearnkit.data import split_for
from unlearnkit.errors import ConfigError, IncompatibleError
from unlearnkit.filters import (
    ClassFilters,
    FilterConfig,
    FilteredModel,
    combine_rows,
    filter_cache_key,
    find_sites,
    fold_filters,
    get_or_train_filters,
)
from unlearnkit.methods import create_method
from unlearnkit.methods.base import RunContext, UnlearnData
from unlearnkit.models import create_model
from unlearnkit.testing import tiny_data, tiny_model
from unlearnkit.training import accuracy

K = 4


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so BN folding is actually exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.3)
    return model.eval()


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    kw = {
        "small_cnn": {"width": 4, "hidden": 16},
        "resnet18": {"width": 4},
        "vit_tiny": {"dim": 16, "depth": 2, "heads": 2},
    }[name]
    return _randomise(create_model(name, K, 3, 8, **kw))


def _random_filters(model: nn.Module, config: FilterConfig, seed: int = 1) -> ClassFilters:
    sites = find_sites(model, config)
    g = torch.Generator().manual_seed(seed)
    return ClassFilters(sites, {s.name: torch.rand(K, s.width, generator=g) for s in sites}, K)


X = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(3))


# ------------------------------------------------------------------------------------------ wrapper & folding
@pytest.mark.parametrize("bn_fold", ["output", "kernel"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vit_tiny"])
def test_folded_weights_give_the_wrappers_outputs(name, bn_fold):
    model = _model(name)
    cfg = FilterConfig(bn_fold=bn_fold)
    filters = _random_filters(model, cfg)
    reference = copy.deepcopy(model)
    net = FilteredModel(model, K, filters.sites, filters.alphas)
    with torch.no_grad():
        for request in ([0], [2], [1, 3]):
            wrapped = net(X, request=request)
            folded = fold_filters(reference, filters, request)
            assert type(folded) is type(reference) and not folded._forward_hooks
            torch.testing.assert_close(folded(X), wrapped, rtol=1e-4, atol=1e-5)
            assert not torch.allclose(wrapped, reference(X), atol=1e-3)  # the filter does change the output
        # per-sample requests (-1 = none) equal the per-class folds row by row
        req = torch.tensor([0, 1, 2, 3, -1, 2])
        out = net(X, request=req)
        for i, c in enumerate(req.tolist()):
            want = reference(X[i : i + 1]) if c < 0 else fold_filters(reference, filters, [c])(X[i : i + 1])
            torch.testing.assert_close(out[i : i + 1], want, rtol=1e-4, atol=1e-5)
    # the wrapped model's own weights are untouched by folding copies
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), reference.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)


def test_default_sites_skip_stem_and_head_and_pair_batchnorm():
    names = {s.name: s for s in find_sites(_model("small_cnn"))}
    assert "body.0" not in names and "head" not in names  # stem and head
    assert names["body.3"].fold == "bn" and names["body.3"].hook == "body.4"
    assert names["body.13"].fold == "weight" and names["body.13"].kind == "linear"
    res = find_sites(_model("resnet18"))
    assert all(s.fold == "bn" for s in res) and any(s.name.endswith("shortcut.0") for s in res)
    assert "conv1" not in {s.name for s in res}
    vit = {s.name for s in find_sites(_model("vit_tiny"))}
    assert {"blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.1.mlp.fc1", "blocks.1.mlp.fc2"} <= vit
    assert "patch_embed" not in vit and "head" not in vit
    assert {s.name for s in find_sites(_model("vit_tiny"), FilterConfig(layers="blocks.*.mlp.fc1"))} == {
        "blocks.0.mlp.fc1",
        "blocks.1.mlp.fc1",
    }
    with pytest.raises(ConfigError, match="matches no"):
        find_sites(_model("vit_tiny"), FilterConfig(layers="nope*"))


def test_batchnorm_output_filter_silences_a_channel_kernel_filter_does_not():
    """α_k = 0 before BN leaves BN's constant β − γμ/σ; the default scales BN's output (γ, β) instead."""
    model = _model("small_cnn")
    seen = {}
    for bn_fold in ("output", "kernel"):
        cfg = FilterConfig(bn_fold=bn_fold)
        sites = find_sites(model, cfg)
        alphas = {s.name: torch.ones(K, s.width) for s in sites}
        alphas["body.3"][1, 0] = 0.0
        folded = fold_filters(model, ClassFilters(sites, alphas, K), [1])
        with torch.no_grad():
            h = folded.body[:5](folded.normalize(X))  # output of the BatchNorm after body.3
        seen[bn_fold] = h[:, 0]
    assert torch.count_nonzero(seen["output"]) == 0
    bn = model.body[4]
    const = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(seen["kernel"], const[0].detach().expand_as(seen["kernel"]))


def test_untrained_filters_are_the_identity():
    model = _model("resnet18")
    sites = find_sites(model)
    ones = ClassFilters(sites, {s.name: torch.ones(K, s.width) for s in sites}, K)
    net = FilteredModel(copy.deepcopy(model), K, sites)
    with torch.no_grad():
        torch.testing.assert_close(net(X, request=[2]), model(X))
        torch.testing.assert_close(fold_filters(model, ones, [0, 3])(X), model(X))


def test_set_requests_combine_by_min_or_product():
    a = torch.tensor([[1.0, 0.2, 0.5], [0.4, 1.0, 0.5], [0.0, 0.0, 0.0]])
    assert torch.equal(combine_rows(a, [0, 1], "min"), torch.tensor([0.4, 0.2, 0.5]))
    assert torch.allclose(combine_rows(a, [0, 1], "product"), torch.tensor([0.4, 0.2, 0.25]))
    with pytest.raises(ConfigError):
        combine_rows(a, [0], "max")
    model = _model("small_cnn")
    filters = _random_filters(model, FilterConfig())
    both = fold_filters(model, filters, [0, 2])
    for s in filters.sites:
        row = filters.row([0, 2])[s.name]
        assert torch.equal(row, torch.minimum(filters.alphas[s.name][0], filters.alphas[s.name][2]))
    bn = dict(both.named_modules())["body.4"]
    want = dict(model.named_modules())["body.4"].weight * filters.row([0, 2])["body.3"]
    torch.testing.assert_close(bn.weight, want)


# ------------------------------------------------------------------------------------------ end to end (digits)
DIGITS_CFG = {"epochs": 20, "batch_size": 64, "lr": 0.05}


@pytest.fixture(scope="module")
def digits_setup(digits_original, tmp_path_factory):
    """The run's shared digits original (conftest); the filters go to a cache of this module's own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("UNLEARNKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield digits_original.bundle, digits_original.model
    torch.set_num_threads(threads)
    mp.undo()


def _per_class_acc(model, ds, k=10):
    from unlearnkit.training import predict_logits

    logits, y = predict_logits(model, ds)
    pred = logits.argmax(1)
    return np.array([float((pred[y == c] == c).float().mean() * 100) for c in range(k)])


def _data(bundle, spec):
    s = split_for(bundle, spec, 0)
    return UnlearnData(
        forget=bundle.train.subset(s.forget),
        retain=bundle.train.subset(s.retain),
        test=bundle.test,
        split=s,
        num_classes=10,
    )


def test_forgetting_one_class_on_digits_and_cache_reuse(digits_setup):
    bundle, original = digits_setup
    before = _per_class_acc(original, bundle.test)
    frozen = {k: v.clone() for k, v in original.state_dict().items()}
    method = create_method("weight_filtering", dataset="digits", model="small_cnn", kind="class")
    assert method.config.epochs == DIGITS_CFG["epochs"] and method.config.lr == DIGITS_CFG["lr"]  # the preset
    ctx = RunContext("cpu", 0)
    out = method.unlearn(copy.deepcopy(original), _data(bundle, "class:3"), ctx)
    assert ctx.history[-1]["from_cache"] == 0.0
    after = _per_class_acc(out, bundle.test)
    assert after[3] <= 5.0
    others = np.arange(10) != 3
    # the other classes together (test images and the retain set) stay within 5 points of the original; a single
    # class of ~45 test images may move a little more (one image is 2.3 points), but never by more than 10
    rest = bundle.test.subset(np.flatnonzero(bundle.test.targets.numpy() != 3))
    retain = bundle.train.subset(np.flatnonzero(bundle.train.targets.numpy() != 3))
    assert abs(accuracy(out, rest) - accuracy(original, rest)) <= 5.0
    assert abs(accuracy(out, retain) - accuracy(original, retain)) <= 5.0
    assert np.all(np.abs(after[others] - before[others]) <= 10.0), (before, after)
    assert type(out).__name__ == "SmallCNN" and not any(m._forward_hooks for m in out.modules())
    assert all(torch.equal(frozen[k], v) for k, v in original.state_dict().items())
    # the same filters serve another class straight from the cache: no second training
    ctx2 = RunContext("cpu", 0)
    out7 = method.unlearn(copy.deepcopy(original), _data(bundle, "class:7"), ctx2)
    assert ctx2.history[-1]["from_cache"] == 1.0
    assert _per_class_acc(out7, bundle.test)[7] <= 5.0
    assert len(list((unlearnkit.oracle.cache_dir() / "filters").rglob("*.safetensors"))) == 1


def test_two_classes_combine_by_min_on_digits(digits_setup):
    bundle, original = digits_setup
    method = create_method("weight_filtering", dataset="digits", model="small_cnn", kind="class")
    before = _per_class_acc(original, bundle.test)
    out = method.unlearn(copy.deepcopy(original), _data(bundle, "class:0,1"), RunContext("cpu", 0))
    after = _per_class_acc(out, bundle.test)
    assert after[0] <= 5.0 and after[1] <= 5.0
    assert np.mean(before[2:]) - np.mean(after[2:]) <= 5.0
    # the result is exactly the min-combined filter folded in
    full = _data(bundle, "class:0")
    from unlearnkit.methods.weight_filtering import _concat

    filters, hit = get_or_train_filters(
        original, _concat(full.forget, full.retain), 10, method.config.filter_config(), seed=0
    )
    assert hit
    ref = fold_filters(original, filters, [0, 1], combine="min")
    for (k, v), (_, w) in zip(out.state_dict().items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(v, w, msg=k)
    rows = evaluate_all_classes(original, filters, bundle.train, bundle.test, sets=[(0, 1)])
    assert [r["classes"] for r in rows] == [(c,) for c in range(10)] + [(0, 1)]
    assert all(r["fa_test"] <= 5.0 and r["fa_train"] <= 5.0 for r in rows)
    assert rows[-1]["orig_fa_test"] > 90
    # explainability read-outs
    sim = class_similarity(filters)
    assert sim.shape == (10, 10) and np.allclose(sim, sim.T) and np.allclose(np.diag(sim), 1.0)
    assert len(top_units(filters, 3, 5)) == 5
    # deletion curve: zeroing the units class 3's filter ranks first hurts class 3 far sooner than zeroing
    # those class 4's filter ranks first
    own, auc_own = deletion_curve(original, filters, 3, bundle.test)
    _, auc_other = deletion_curve(original, filters, 3, bundle.test, ranking=4)
    assert own[0] == pytest.approx(before[3]) and auc_own + 20 < auc_other


def test_explainability_files(tmp_path):
    model = _model("small_cnn")
    filters = _random_filters(model, FilterConfig())
    out = save_filter_maps(filters, tmp_path / "maps.npz", None, class_names=list("abcd"))
    z = np.load(out["npz"])
    assert z["similarity"].shape == (K, K) and list(z["class_names"]) == list("abcd")
    assert z["alpha/body.3"].shape == (K, 8)
    pytest.importorskip("matplotlib")
    out = save_filter_maps(filters, tmp_path / "maps.npz", tmp_path / "maps.png")
    assert out["figure"].stat().st_size > 1000


# ------------------------------------------------------------------------------------------ contract & errors
def test_without_split_the_forget_labels_are_the_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path))
    data = tiny_data("class:1")
    model = tiny_model(trained=True)
    m = create_method("weight_filtering", epochs=1, lr=0.05, batch_size=64)
    out = m.unlearn(copy.deepcopy(model), UnlearnData(forget=data.forget, retain=data.retain), RunContext("cpu", 0))
    ref = m.unlearn(copy.deepcopy(model), data, RunContext("cpu", 0))  # same class via the split: cache hit
    for v, w in zip(out.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(v, w)
    mixed = tiny_data("random:0.2")
    with pytest.raises(IncompatibleError, match="class"):
        m.unlearn(copy.deepcopy(model), UnlearnData(forget=mixed.forget, retain=mixed.retain), RunContext("cpu", 0))
    with pytest.raises(IncompatibleError, match="class"):
        m.unlearn(copy.deepcopy(model), mixed, RunContext("cpu", 0))


def test_cache_key_depends_on_weights_config_and_seed_not_on_order():
    model = tiny_model()
    data = tiny_data("class:1")
    from unlearnkit.methods.weight_filtering import _concat

    d = _concat(data.forget, data.retain)
    d2 = _concat(tiny_data("class:2").forget, tiny_data("class:2").retain)
    base = filter_cache_key(model, d, K, FilterConfig(), 0)
    assert filter_cache_key(model, d2, K, FilterConfig(), 0) == base
    assert filter_cache_key(model, d, K, FilterConfig(lr=0.01), 0) != base
    assert filter_cache_key(model, d, K, FilterConfig(), 1) != base
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters())[0].add_(1e-3)
    assert model_sha256(other) != model_sha256(model)
    assert filter_cache_key(other, d, K, FilterConfig(), 0) != base


def test_damaged_cache_file_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path))
    model, data = tiny_model(), tiny_data("class:1")
    cfg = FilterConfig(epochs=1, max_steps=1)
    f1, hit1 = get_or_train_filters(model, data.retain, K, cfg)
    f2, hit2 = get_or_train_filters(model, data.retain, K, cfg)
    assert not hit1 and hit2 and all(torch.equal(f1.alphas[k], f2.alphas[k]) for k in f1.alphas)
    path = next((tmp_path / "filters").rglob("*.safetensors"))
    path.write_bytes(b"garbage")
    _, hit3 = get_or_train_filters(model, data.retain, K, cfg)
    assert not hit3 and path.stat().st_size > 100


def test_training_keeps_frozen_weights_and_alpha_in_unit_interval():
    model = tiny_model(trained=True)
    data = tiny_data("class:1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from unlearnkit.filters import train_filters

    f = train_filters(model, data.retain, K, FilterConfig(epochs=2, lr=0.2, batch_size=32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert all(p.requires_grad for p in model.parameters()) and model.training is False
    assert all(float(a.min()) >= 0.0 and float(a.max()) <= 1.0 for a in f.alphas.values())
    assert any(float(a.min()) < 1.0 for a in f.alphas.values())
    assert f.num_parameters() == K * sum(s.width for s in f.sites)


@pytest.mark.parametrize(
    "bad",
    [{"p_forget": 1.0}, {"forget_loss": "nope"}, {"bn_fold": "x"}, {"combine": "max"}, {"epochs": 0}, {"lr": -1.0}],
)
def test_bad_config_is_rejected(bad):
    with pytest.raises(ConfigError):
        create_method("weight_filtering", **bad)


def test_smoke_config_runs_on_tiny_data():
    cls = unlearnkit.methods.get_method_class("weight_filtering")
    data = tiny_data("class:1")
    out = create_method("weight_filtering", **cls.smoke_config).unlearn(
        tiny_model(trained=True), data, RunContext("cpu", 0)
    )
    assert isinstance(out, nn.Module) and out(X).shape == (6, K)
