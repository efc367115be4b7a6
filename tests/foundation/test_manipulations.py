"""Training-data manipulations (issue 15): BadNets and interclass confusion, poisoned forget specs, ASR / IC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unlearnkit.data import split_for
from unlearnkit.data.datasets import DatasetBundle, ImageDataset, bundle_digest
from unlearnkit.data.manipulations import (
    BadNets,
    Confusion,
    ManipulatedBundle,
    apply,
    apply_trigger,
    manipulation_eval_sets,
    parse_manipulation,
)
from unlearnkit.errors import ConfigError, DivergenceError, IncompatibleError, UnlearnkitError
from unlearnkit.evaluation.metrics import AsrTest, IcConfusionTest, MemorisedManipulated, Outputs
from unlearnkit.methods import METHODS
from unlearnkit.testing import tiny_bundle

BADNETS = "badnets:rate=0.25,target=2,size=2,offset=1,pos=br,value=1"


def _onehot(pred: list[int], k: int = 4) -> np.ndarray:
    z = np.zeros((len(pred), k), np.float32)
    z[np.arange(len(pred)), pred] = 5.0
    return z


# ------------------------------------------------------------------------------------------------- grammar
def test_parse_defaults_and_canonical_form() -> None:
    m = parse_manipulation("badnets")
    assert m == BadNets(rate=0.05, target=0, size=4, offset=2, pos="br", value=0.0)  # evaluation.md §5
    assert parse_manipulation(str(m)) == m
    assert parse_manipulation(" BadNets : value=1 , rate=0.1") == BadNets(rate=0.1, value=1.0)
    assert parse_manipulation("confusion:k=7,a=1,b=3") == Confusion(7, 1, 3)
    assert parse_manipulation("none") is None and parse_manipulation(None) is None


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("badnets:rat=0.1", r"badnets has no key 'rat'; valid keys: rate, target"),
        ("badnets:rate=lots", r"rate='lots' is not a finite number"),
        ("badnets:size=2.5", r"size='2.5' is not an integer"),
        ("badnets:rate=1.5", "rate must be strictly between 0 and 1"),
        ("badnets:pos=middle", "pos must be one of br, bl, tr, tl"),
        ("badnets:value=255", r"value must be in \[0, 1\]"),
        ("badnets:rate", "expected key=value"),
        ("badnets:rate=0.1,rate=0.2", "given twice"),
        ("confusion:a=1", "give both a= and b="),
        ("confusion:k=0", "k must be ≥ 1"),
        ("label_noise:p=0.1", "unknown manipulation 'label_noise'"),
    ],
)
def test_parse_errors_name_the_bad_key(spec: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_manipulation(spec)


# ------------------------------------------------------------------------------------------------- badnets
def test_trigger_lands_exactly_where_specified_and_only_on_the_chosen_images() -> None:
    b = tiny_bundle()  # 128 uint8 images 3×8×8, 4 classes
    mb, idx, info = apply(b, BADNETS, seed=3)
    assert isinstance(mb, ManipulatedBundle)
    assert len(idx) == 32 and np.array_equal(idx, np.unique(idx)) and np.array_equal(mb.manipulated, idx)
    x0, x1 = b.train.images, mb.train.images
    y0, y1 = b.train.targets, mb.train.targets
    chosen = np.zeros(len(y0), bool)
    chosen[idx] = True
    # rows/cols [8-1-2, 8-1) = 5, 6: the 2×2 patch one pixel from the bottom-right corner, every channel 255
    patch = np.zeros((8, 8), bool)
    patch[5:7, 5:7] = True
    assert (x1[chosen][:, :, patch] == 255).all()
    assert torch.equal(x1[chosen][:, :, ~patch], x0[chosen][:, :, ~patch])
    assert torch.equal(x1[~chosen], x0[~chosen])  # other images untouched
    assert (y1[chosen] == 2).all() and torch.equal(y1[~chosen], y0[~chosen])  # labels changed only there
    assert torch.equal(b.train.images, x0) and b.train.images is not x1  # the clean bundle is not modified
    assert torch.equal(mb.test.images, b.test.images)  # the test set stays clean
    assert info["spec"] == str(parse_manipulation(BADNETS)) and info["size"] == 32 and info["target"] == 2


@pytest.mark.parametrize(
    ("pos", "rows", "cols"), [("tl", (0, 3), (0, 3)), ("tr", (0, 3), (5, 8)), ("bl", (5, 8), (0, 3))]
)
def test_trigger_positions(pos: str, rows: tuple[int, int], cols: tuple[int, int]) -> None:
    x = torch.zeros(2, 1, 8, 8)
    out = apply_trigger(x, BadNets(size=3, offset=0, pos=pos, value=0.5))
    want = torch.zeros(2, 1, 8, 8)
    want[..., rows[0] : rows[1], cols[0] : cols[1]] = 0.5
    assert torch.equal(out, want) and x.abs().sum() == 0


def test_manipulation_is_seeded_and_changes_the_digest() -> None:
    b = tiny_bundle()
    m1, i1, _ = apply(b, BADNETS, seed=0)
    m2, i2, _ = apply(b, BADNETS, seed=0)
    _, i3, _ = apply(b, BADNETS, seed=1)
    assert np.array_equal(i1, i2) and not np.array_equal(i1, i3)
    assert torch.equal(m1.train.images, m2.train.images)
    assert bundle_digest(m1) == bundle_digest(m2) != bundle_digest(b)  # cached originals/oracles never mix
    c, _, _ = apply(b, "confusion:k=5,a=0,b=1", seed=0)
    assert bundle_digest(c) not in (bundle_digest(b), bundle_digest(m1))
    # the split digests differ too (the evaluation cache keys on them)
    assert split_for(b, "random:0.1", 0).sha256 != split_for(m1, "random:0.1", 0).sha256


def test_a_trigger_that_changes_nothing_is_refused() -> None:
    x = torch.zeros(64, 1, 8, 8, dtype=torch.uint8)
    x[:, :, 2:6, 2:6] = 200  # black border, like (Fashion-)MNIST
    y = torch.arange(64) % 4
    base = tiny_bundle()
    b = DatasetBundle(ImageDataset(x, y), ImageDataset(x[:8], y[:8]), base.info)
    with pytest.raises(ConfigError, match=r"leaves 100% of the chosen images unchanged.*value=1"):
        apply(b, "badnets:size=2,offset=0", 0)
    with pytest.raises(ConfigError, match="does not fit a 8×8 image"):
        apply(b, "badnets:size=8,offset=1,value=1", 0)
    with pytest.raises(ConfigError, match=r"target 4 is outside \[0, 4\)"):
        apply(b, "badnets:target=4,value=1,offset=0", 0)


# ----------------------------------------------------------------------------------------------- confusion
def test_confusion_swaps_k_labels_of_each_class() -> None:
    b = tiny_bundle()
    mb, idx, info = apply(b, "confusion:k=6,a=1,b=3", seed=0)
    y0, y1 = b.train.targets.numpy(), mb.train.targets.numpy()
    assert len(idx) == 12 and info["classes"] == [1, 3]
    assert (y0[idx] == 1).sum() == 6 and (y0[idx] == 3).sum() == 6
    assert np.array_equal(y1[idx], np.where(y0[idx] == 1, 3, 1))
    rest = np.setdiff1d(np.arange(len(y0)), idx)
    assert np.array_equal(y1[rest], y0[rest]) and torch.equal(mb.train.images, b.train.images)
    with pytest.raises(ConfigError, match="class 1 has only 32 training images"):
        apply(b, "confusion:k=33,a=1,b=3", 0)
    with pytest.raises(ConfigError, match="no default class pair"):
        apply(b, "confusion:k=3", 0)


def test_confusion_default_pair_is_the_most_confused_pair_of_a_clean_model() -> None:
    b = tiny_bundle()

    class Confuses2And3(torch.nn.Module):  # the true class from the image, except class 2 → 3
        def __init__(self) -> None:
            super().__init__()
            self.lookup = {
                bytes(x.numpy().tobytes()): int(y) for x, y in zip(b.test.images, b.test.targets, strict=True)
            }

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            keys = [(xi * 255).round().to(torch.uint8).cpu().numpy().tobytes() for xi in x]
            pred = torch.tensor([self.lookup[k] for k in keys])
            return torch.nn.functional.one_hot(torch.where(pred == 2, 3, pred), 4).float()

    _, _, info = apply(b, "confusion:k=3", 0, model=Confuses2And3())
    assert info["pair_source"] == "most-confused pair of a clean model" and info["classes"] == [2, 3]


# ---------------------------------------------------------------------------------------------- forget specs
def test_poisoned_forget_specs() -> None:
    mb, idx, _ = apply(tiny_bundle(), BADNETS, seed=0)
    full = split_for(mb, "poisoned", 0)
    assert np.array_equal(full.forget, idx) and len(np.intersect1d(full.retain, idx)) == 0
    part = split_for(mb, "poisoned:0.25", 0)
    assert part.spec == "poisoned:0.25" and len(part.forget) == 8
    assert np.isin(part.forget, idx).all()  # a subset of the manipulated set …
    unknown = np.setdiff1d(idx, part.forget)
    assert np.isin(unknown, part.retain).all()  # … and the unknown rest stays in the retain set
    assert len(part.forget) + len(part.retain) == len(mb.train)
    assert np.array_equal(split_for(mb, "poisoned:0.25", 0).forget, part.forget)  # seeded
    assert not np.array_equal(split_for(mb, "poisoned:0.25", 5).forget, part.forget)
    with pytest.raises(ConfigError, match="needs manipulated training data"):
        split_for(tiny_bundle(), "poisoned", 0)
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        split_for(mb, "poisoned:0", 0)


# --------------------------------------------------------------------------------------------------- metrics
def test_eval_sets_hold_the_right_images() -> None:
    b = tiny_bundle()  # test labels cycle 0,1,2,3
    mb, idx, _ = apply(b, BADNETS, seed=0)
    sets = manipulation_eval_sets(mb, np.arange(len(b.test)))
    y = b.test.targets
    trig, trig_t = sets["test_triggered"], sets["test_triggered_target_class"]
    assert len(trig) == int((y != 2).sum()) == 48 and len(trig_t) == 16
    assert torch.equal(trig.images, apply_trigger(b.test.images[y != 2], BadNets(0.25, 2, 2, 1, "br", 1.0)))
    assert (trig.targets == 2).all() and (trig_t.targets == 2).all()
    assert torch.equal(sets["manipulated"].images, mb.train.images[idx]) and (sets["manipulated"].targets == 2).all()
    assert manipulation_eval_sets(b, np.arange(len(b.test))) == {}  # clean data: nothing
    cb, _, _ = apply(b, "confusion:k=4,a=1,b=3", seed=0)
    pair = manipulation_eval_sets(cb, np.arange(len(b.test)))["test_pair_swapped"]
    assert len(pair) == 32 and torch.equal(pair.targets, torch.where(y[(y == 1) | (y == 3)] == 1, 3, 1))


def test_asr_hand_example() -> None:
    # target 2: four triggered non-target images predicted 2, 2, 1, 0 → ASR 50 %; two triggered target-class
    # images predicted 2, 2 count only in the reference variant: (2 + 2) / 6 = 66.7 %
    for options, want in (({}, 50.0), ({"asr_include_target_class": True}, 400 / 6), ({"reproduce": True}, 400 / 6)):
        m = AsrTest(options)
        m.update("test_triggered", Outputs(_onehot([2, 2]), np.array([2, 2])))
        m.update("test_triggered", Outputs(_onehot([1, 0]), np.array([2, 2]), offset=2))
        m.update("test_triggered_target_class", Outputs(_onehot([2, 2]), np.array([2, 2])))
        m.update("test", Outputs(_onehot([0]), np.array([2])))  # other sets are ignored
        assert m.compute()["asr_test"] == pytest.approx(want)


def test_ic_and_memorised_hand_example() -> None:
    # pair (1, 3): test images of class 1 labelled 3 and vice versa; 1 of 4 predicted as the other class → 25 %
    ic = IcConfusionTest()
    ic.update("test_pair_swapped", Outputs(_onehot([3, 1, 3, 3]), np.array([3, 3, 1, 1])))
    assert ic.compute()["ic_confusion_test"] == pytest.approx(25.0)
    mem = MemorisedManipulated()
    mem.update("manipulated", Outputs(_onehot([3, 3, 0]), np.array([3, 1, 0])))
    assert mem.compute()["memorised_manipulated"] == pytest.approx(200 / 3)


def test_manipulation_metrics_only_on_manipulated_data() -> None:
    from unlearnkit.evaluation import EvalOptions, evaluate
    from unlearnkit.testing import tiny_model

    b = tiny_bundle()
    mb, _, _ = apply(b, BADNETS, seed=0)
    model = tiny_model()
    clean = evaluate(model, b, split_for(b, "random:0.1", 0), device="cpu")
    assert "asr_test" not in clean["models"]["unlearned"]["metrics"]
    rec = evaluate(model, mb, split_for(mb, "poisoned:0.5", 0), retrained=tiny_model(seed=1), device="cpu")
    m = rec["models"]["unlearned"]["metrics"]
    assert {"asr_test", "memorised_manipulated", "accuracy_test"} <= set(m) and "ic_confusion_test" not in m
    assert "asr_test" in rec["gaps_to_retrained"]
    assert rec["task"]["scenario"] == "backdoor" and rec["task"]["manipulation"]["spec"].startswith("badnets:")
    assert rec["task"]["forget"]["spec"] == "poisoned:0.5"
    with pytest.raises(IncompatibleError, match="asr_test needs the test_triggered"):
        evaluate(model, b, split_for(b, "random:0.1", 0), device="cpu", options=EvalOptions(metrics=["asr_test"]))


# --------------------------------------------------------------------------------------------------- methods
CLASS_ONLY = [n for n in METHODS.names() if METHODS.get(n).requires.split_kinds == {"class"}]
#: methods that delete random samples from a plain network (``head`` deletes from head models only: tests/test_heads.py)
OTHERS = [
    n
    for n in METHODS.names()
    if "random" in METHODS.get(n).requires.split_kinds and "plain" in METHODS.get(n).requires.model_kinds
]


@pytest.mark.parametrize("name", CLASS_ONLY)
def test_class_only_methods_refuse_poisoned_specs_before_compute(name: str) -> None:
    from unlearnkit.pipeline import prepare_method, run_experiment

    with pytest.raises(IncompatibleError, match=r"supports only class forgetting, not poisoned-sample"):
        prepare_method(name, "synthetic", "small_cnn", "poisoned:0.25")
    with pytest.raises(IncompatibleError, match="poisoned-sample"):  # run_experiment refuses before any training
        run_experiment("synthetic", "small_cnn", "poisoned", name, manipulation=BADNETS, device="cpu")


@pytest.fixture(scope="module")
def poisoned_task() -> tuple[object, object]:
    from unlearnkit.methods.base import UnlearnData
    from unlearnkit.testing import tiny_model
    from unlearnkit.training import Recipe, train

    mb, _, _ = apply(tiny_bundle(), BADNETS, seed=0)
    model = tiny_model()
    train(model, mb.train, Recipe(epochs=5, batch_size=32, lr=0.05), seed=0, progress=False)
    return model, UnlearnData.from_split(mb, split_for(mb, "poisoned:0.5", 0))


@pytest.mark.parametrize("name", OTHERS)
def test_every_method_runs_on_a_poisoned_forget_set(name: str, poisoned_task: tuple[object, object]) -> None:
    """The contract's `check_runs` on manipulated data: a known part of the poison forgotten, the rest retained."""
    from unlearnkit.runner import run_method
    from unlearnkit.testing import _build

    model, data = poisoned_task
    assert isinstance(model, torch.nn.Module)
    try:
        out = run_method(_build(METHODS.get(name), name), model, data, device="cpu", seed=0).model  # type: ignore[arg-type]
    except DivergenceError as exc:  # a method's own guard (iu's retain-accuracy check) is a clear, named refusal
        if f"`{name}` diverged" not in str(exc):
            raise
        return
    assert all(torch.isfinite(v).all() for v in out.state_dict().values() if v.is_floating_point())
    changed = any(
        not torch.equal(a, b) for a, b in zip(model.state_dict().values(), out.state_dict().values(), strict=True)
    )
    assert changed, f"{name} left the weights unchanged on a poisoned forget set"


def test_class_only_method_refused_by_the_runner_too(poisoned_task: tuple[object, object]) -> None:
    from unlearnkit.runner import run_method
    from unlearnkit.testing import _build

    if not CLASS_ONLY:
        pytest.skip("no class-only method registered")
    model, data = poisoned_task
    with pytest.raises(UnlearnkitError, match="supports only class forgetting"):
        run_method(_build(METHODS.get(CLASS_ONLY[0]), CLASS_ONLY[0]), model, data, device="cpu")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ end to end
@pytest.mark.slow  # two 12-epoch trainings on 512 synthetic images: ~15 s idle, a minute on a loaded CPU
def test_a_model_learns_the_trigger_and_retraining_on_the_clean_remainder_removes_it() -> None:
    """BadNets on the synthetic data: the original (poisoned data) follows the trigger; retrained without the
    manipulated samples, the model ignores it; both keep their clean accuracy."""
    from unlearnkit.evaluation import EvalOptions, evaluate
    from unlearnkit.models import create_model
    from unlearnkit.training import Recipe, train

    b = tiny_bundle(n_train=512, n_test=128)
    mb, _, _ = apply(b, "badnets:rate=0.1,target=0,size=3,offset=0,value=1", seed=0)
    full, clean = split_for(mb, None, 0), split_for(mb, "poisoned", 0)
    recipe = Recipe(epochs=12, batch_size=32, lr=0.05)

    def fit(split: object) -> torch.nn.Module:
        torch.manual_seed(0)
        net = create_model("small_cnn", 4, 3, 8, width=8, hidden=32)
        train(net, mb.train.subset(split.retain), recipe, seed=0, progress=False)  # type: ignore[attr-defined]
        return net

    original, retrained = fit(full), fit(clean)
    rec = evaluate(
        original, mb, clean, retrained=retrained, device="cpu", options=EvalOptions(metrics=["-mia_efficacy_forget"])
    )
    o, r = rec["models"]["unlearned"]["metrics"], rec["models"]["retrained"]["metrics"]
    print({k: (round(o[k], 1), round(r[k], 1)) for k in ("asr_test", "accuracy_test", "memorised_manipulated")})
    assert o["asr_test"] >= 80.0, o  # the backdoor was learnt
    assert r["asr_test"] <= 20.0, r  # and is gone after retraining on the clean remainder
    assert o["accuracy_test"] >= 90.0 and r["accuracy_test"] >= 90.0
    assert o["memorised_manipulated"] >= 90.0 > r["memorised_manipulated"]
    assert rec["gaps_to_retrained"]["asr_test"] >= 60.0


# ----------------------------------------------------------------------------------------------- CLI, bench
def test_cli_flag_errors_name_the_bad_key(capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    from unlearnkit.cli import main

    rc = main(["train", "--dataset", "synthetic", "--model", "small_cnn", "--manipulation", "badnets:sise=2",
               "--out", str(tmp_path)])  # fmt: skip
    assert rc == 2 and "badnets has no key 'sise'" in capsys.readouterr().err


def test_bench_spec_manipulations() -> None:
    from unlearnkit.bench.spec import parse_spec, plan_runs

    def spec_text(extra: str) -> str:
        grid = '[grid]\ndatasets = ["synthetic"]\nmodels = ["small_cnn"]\nseeds = [0]\n'
        return grid + extra + '\n[[methods]]\nname = "ft"\n'

    spec = parse_spec(spec_text('forget = ["poisoned:0.5", "random:0.1"]\nmanipulations = ["none", "badnets:value=1"]'))
    assert spec.manipulations == (None, str(parse_manipulation("badnets:value=1")))
    runs = plan_runs(spec)
    assert len(runs) == 4 and len({r.key for r in runs}) == 4
    skipped = [r for r in runs if r.skip_reason]
    assert [(r.manipulation, r.forget.spec) for r in skipped] == [(None, "poisoned:0.5")]
    assert runs[2].describe()["manipulation"].startswith("badnets:") and "manipulation" not in runs[0].describe()
    with pytest.raises(ConfigError, match=r"poisoned forget specs need grid\.manipulations"):
        parse_spec(spec_text('forget = ["poisoned"]'))
    with pytest.raises(ConfigError, match=r"grid\.manipulations\[0\]: .*badnets has no key 'rat'"):
        parse_spec(spec_text('forget = ["random:0.1"]\nmanipulations = ["badnets:rat=1"]'))
