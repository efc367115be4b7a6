"""`evaluate` end to end on the synthetic dataset: identities, streamed == functional, bad input, audits."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from unlearnkit.data import Split, split_for
from unlearnkit.errors import ConfigError, DivergenceError, IncompatibleError, UnknownNameError
from unlearnkit.evaluation import (
    METRICS,
    EvalOptions,
    Outputs,
    RunInfo,
    evaluate,
    format_table,
    metric_table,
    mia,
    noise_floor,
    resolve_selection,
)
from unlearnkit.evaluation import functional as F
from unlearnkit.evaluation.suite import eval_datasets
from unlearnkit.oracle import TrainedModel
from unlearnkit.testing import tiny_model
from unlearnkit.training import predict_logits

DEFAULT_KEYS = {
    "accuracy_forget",
    "error_forget",
    "accuracy_retain",
    "accuracy_test",
    "accuracy_test_forgotten_classes",
    "mia_efficacy_forget",
    "mia_member_rate_forget_entropy_logreg",
    "kl_to_retrained_forget",
    "js_to_retrained_forget",
}


def test_retrained_as_unlearned_gives_zero_gaps(bundle, class_split, original, retrained):
    rec = evaluate(copy.deepcopy(retrained), bundle, class_split, original=original, retrained=retrained, device="cpu")
    gaps = rec["gaps_to_retrained"]
    assert gaps["avg_gap_to_retrained"] == 0.0
    assert all(v == 0.0 for v in gaps.values())
    un = rec["models"]["unlearned"]["metrics"]
    assert un["kl_to_retrained_forget"] == 0.0 and un["js_to_retrained_forget"] == 0.0
    assert set(un) >= DEFAULT_KEYS and set(rec["models"]["original"]["metrics"]) >= DEFAULT_KEYS
    assert rec["models"]["original"]["metrics"]["kl_to_retrained_forget"] > 0


def test_streamed_metrics_equal_functional(bundle, class_split, original, retrained):
    rec = evaluate(original, bundle, class_split, retrained=retrained, device="cpu", options=EvalOptions(batch_size=7))
    m = rec["models"]["unlearned"]["metrics"]
    ds = eval_datasets(bundle, class_split)
    out = {s: predict_logits(original, d) for s, d in ds.items()}
    ref = {s: predict_logits(retrained, d) for s, d in ds.items()}
    for s, key in (
        ("forget", "accuracy_forget"),
        ("retain", "accuracy_retain"),
        ("test", "accuracy_test"),
        ("test_forgotten_classes", "accuracy_test_forgotten_classes"),
    ):
        logits, y = out[s]
        assert m[key] == pytest.approx(100 * np.mean(logits.argmax(1).numpy() == y.numpy()))
    assert m["error_forget"] == pytest.approx(100 - m["accuracy_forget"])
    conf = {s: F.confidence(*out[s]) for s in ("retain", "test", "forget")}
    assert m["mia_efficacy_forget"] == pytest.approx(
        mia.mia_efficacy_svc(conf["retain"], conf["test"], conf["forget"], dedupe=False)["mia_efficacy"]
    )
    ent = {s: F.entropy(F.softmax(out[s][0], np.float32)) for s in ("retain", "test", "forget")}
    assert m["mia_member_rate_forget_entropy_logreg"] == pytest.approx(
        mia.mia_entropy_logreg(ent["retain"], ent["test"], ent["forget"])["member_rate"]
    )
    assert m["kl_to_retrained_forget"] == pytest.approx(F.kl_divergence(ref["forget"][0], out["forget"][0]).mean())
    assert m["js_to_retrained_forget"] == pytest.approx(F.js_divergence(ref["forget"][0], out["forget"][0]).mean())


def test_class_metric_streaming_equals_one_shot():
    rng = np.random.default_rng(0)
    z, y = rng.normal(size=(50, 3)).astype(np.float32), rng.integers(0, 3, 50)
    for name in ("accuracy_forget", "kl_to_retrained_forget", "js_to_retrained_forget"):
        zr = rng.normal(size=(50, 3)).astype(np.float32)
        whole, streamed = METRICS.get(name)(), METRICS.get(name)()
        whole.update("forget", Outputs(z, y), Outputs(zr, y))
        for a in range(0, 50, 8):
            streamed.update("forget", Outputs(z[a : a + 8], y[a : a + 8], a), Outputs(zr[a : a + 8], y[a : a + 8], a))
        assert streamed.compute()[name] == pytest.approx(whole.compute()[name], rel=1e-12)


def test_record_sections_and_runtime(bundle, random_split, original, retrained):
    rec = evaluate(
        original,
        bundle,
        random_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(
            runtime_seconds=2.0,
            runtime_setup_seconds=0.5,
            retrain_seconds=10.0,
            method="finetune",
            config={"lr": 0.1},
            seed=3,
            noise_floor=0.7,
        ),
    )
    for key in (
        "schema_version",
        "run_id",
        "package",
        "environment",
        "task",
        "model",
        "method",
        "seed",
        "models",
        "gaps_to_retrained",
        "metric_meta",
        "noise_floor_avg_gap",
    ):
        assert key in rec
    import unlearnkit

    assert rec["package"]["version"] == unlearnkit.__version__
    assert rec["task"]["forget"]["indices_sha256"] == random_split.sha256
    assert rec["task"]["test_set_for_accuracy_test"] == "test"
    assert "accuracy_test_forgotten_classes" not in rec["models"]["unlearned"]["metrics"]  # random forgetting
    un = rec["models"]["unlearned"]
    assert un["runtime_update_seconds"] == pytest.approx(1.5) and un["speedup_vs_retrained"] == pytest.approx(5.0)
    assert rec["noise_floor_avg_gap"] == 0.7 and rec["seed"] == 3
    assert rec["metric_meta"]["accuracy_forget"] == {"unit": "%", "higher_is_better": None}
    assert rec["metric_meta"]["avg_gap_to_retrained"] == {"unit": "pp", "higher_is_better": False}
    assert "original" not in rec["models"]
    rows = format_table(rec)
    assert {"metric", "original", "retrained", "unlearned", "gap"} == set(rows[0])
    assert any(r["metric"].startswith("avg_gap_to_retrained") for r in rows)


def test_without_retrained_no_gaps_no_kl(bundle, class_split, original):
    rec = evaluate(original, bundle, class_split, device="cpu")
    assert rec["gaps_to_retrained"] == {}
    assert "kl_to_retrained_forget" not in rec["models"]["unlearned"]["metrics"]
    with pytest.raises(IncompatibleError, match="needs the retrained model"):
        evaluate(original, bundle, class_split, device="cpu", options=EvalOptions(metrics=["kl_to_retrained_forget"]))


def test_mia_flavour_changes_avg_gap(bundle, class_split, original, retrained):
    a = evaluate(
        original,
        bundle,
        class_split,
        retrained=retrained,
        device="cpu",
        options=EvalOptions(mia_flavour="entropy_logreg"),
    )
    g = a["gaps_to_retrained"]
    expect = np.mean(
        [g["accuracy_forget"], g["accuracy_retain"], g["accuracy_test"], g["mia_member_rate_forget_entropy_logreg"]]
    )
    assert g["avg_gap_to_retrained"] == pytest.approx(expect)
    with pytest.raises(ConfigError, match="mia_flavour"):
        evaluate(original, bundle, class_split, options=EvalOptions(mia_flavour="nope"))


def test_noise_floor(bundle, class_split, original, retrained):
    assert noise_floor(retrained, copy.deepcopy(retrained), bundle, class_split, "cpu") == 0.0
    # any second model works for the arithmetic; the original is far from the retrained one on this split
    nf = noise_floor(retrained, original, bundle, class_split, "cpu")
    assert nf > 10
    rec = evaluate(original, bundle, class_split, retrained=retrained, device="cpu", run=RunInfo(noise_floor=original))
    assert rec["noise_floor_avg_gap"] == pytest.approx(nf)
    assert rec["gaps_to_retrained"]["avg_gap_to_retrained"] == pytest.approx(nf)
    with pytest.raises(IncompatibleError, match="5 outputs"):
        noise_floor(retrained, tiny_model(num_classes=5), bundle, class_split, "cpu")


# ----------------------------------------------------------------------------------------------- bad input
def test_refuses_different_num_classes(bundle, class_split, retrained):
    five = tiny_model(num_classes=5)
    with pytest.raises(IncompatibleError, match="5 outputs but the dataset has 4 classes"):
        evaluate(five, bundle, class_split, retrained=retrained)


def test_refuses_retrained_for_another_split(bundle, class_split, random_split, retrained):
    with pytest.raises(IncompatibleError, match="trained for split"):
        evaluate(
            retrained, bundle, random_split, retrained=retrained, run=RunInfo(retrained_split_sha256=class_split.sha256)
        )
    wrapped = TrainedModel(retrained, {"split_sha256": class_split.sha256}, False)
    with pytest.raises(IncompatibleError, match="trained for split"):
        evaluate(retrained, bundle, random_split, retrained=wrapped)
    evaluate(retrained, bundle, class_split, retrained=wrapped, device="cpu")  # the matching split is accepted


def test_refuses_empty_split(bundle, original):
    with pytest.raises(ConfigError, match=r"forget set .* is empty"):
        evaluate(original, bundle, split_for(bundle, None, 0))
    n = len(bundle.train)
    no_test = Split("synthetic", "random:0.1", 0, np.arange(5), np.arange(5, n), np.zeros(0, np.int64), n)
    with pytest.raises(ConfigError, match=r"test set .* is empty"):
        evaluate(original, bundle, no_test)


def test_refuses_nonfinite_logits(bundle, class_split, retrained):
    broken = copy.deepcopy(retrained)
    with torch.no_grad():
        broken.head.bias[0] = float("nan")
    with pytest.raises(DivergenceError, match="unlearned model produces non-finite logits"):
        evaluate(broken, bundle, class_split, retrained=retrained, device="cpu")


def test_unknown_metric_and_missing_audit_inputs(bundle, class_split, original, retrained):
    with pytest.raises(UnknownNameError, match="did you mean"):
        evaluate(original, bundle, class_split, options=EvalOptions(metrics=["acuracy_forget"]))
    with pytest.raises(IncompatibleError, match="extra_models"):
        evaluate(original, bundle, class_split, retrained=retrained, options=EvalOptions(metrics=["competition"]))
    with pytest.raises(IncompatibleError, match="original model"):
        evaluate(original, bundle, class_split, retrained=retrained, options=EvalOptions(metrics=["relearn_time"]))


def test_selection_rules():
    streamed, audits, _ = resolve_selection(["cka"])
    assert "accuracy_forget" in streamed and audits == ["cka"]  # names add to the default suite
    streamed, _, _ = resolve_selection("mia_efficacy_forget_prob,-mia_efficacy_forget")
    assert "mia_efficacy_forget_prob" in streamed and "mia_efficacy_forget" not in streamed
    assert "accuracy_retain" in streamed
    streamed, _, derived = resolve_selection(["default", "tow_to_retrained"])
    assert streamed == resolve_selection(None)[0] and derived == ["tow_to_retrained"]
    with pytest.raises(ConfigError, match="cannot be selected"):
        resolve_selection(["avg_gap_to_retrained"])


def test_metric_table_rows():
    rows = metric_table()
    by = {r["name"]: r for r in rows}
    assert by["accuracy_forget"] == {
        "name": "accuracy_forget",
        "unit": "%",
        "direction": "closer",
        "default": "on",
        "section": "1.1",
    }
    assert by["kl_to_retrained_forget"]["direction"] == "lower"
    assert by["mia_efficacy_forget_prob"]["default"] == "off"
    assert any(r["name"].startswith("competition") and r["default"] == "off" for r in rows)


# -------------------------------------------------------------------------------------------------- audits
def test_audits_on_tiny_data(bundle, class_split, original, retrained, retrained_b):
    rec = evaluate(
        copy.deepcopy(retrained),
        bundle,
        class_split,
        original=original,
        retrained=retrained,
        device="cpu",
        run=RunInfo(extra_models={"retrained_2": retrained_b}),
        options=EvalOptions(
            metrics=["mia_population", "linear_probe", "cka", "relearn_time", "tow_to_retrained"],
            audit_options={"relearn_time": {"max_steps": 30}},
        ),
    )
    un, orig, ret = (rec["models"][r]["metrics"] for r in ("unlearned", "original", "retrained"))
    # the unlearned model is a copy of the retrained one: identical audit values, CKA = 1, ToW = 1, AIN = 1
    for k in ("mia_auc_forget_loss", "probe_accuracy_test", "relearn_steps_forget"):
        assert un[k] == ret[k]
    assert un["cka_to_retrained_forget"] == pytest.approx(1.0) and un["tow_to_retrained"] == 1.0
    assert un["ain_to_retrained"] == 1.0 or math.isnan(un["ain_to_retrained"] or float("nan"))
    assert orig["relearn_steps_forget"] == 0  # the original already has the target accuracy
    assert 0 <= orig["mia_auc_forget_confidence"] <= 1
    assert "probe_accuracy_test_forgotten_classes" in orig
    assert rec["extras"]["cka"]["ceiling_cka_retrained_2_test"] < 1.0
    assert "retrained_2" in rec["models"]  # single extra models get the same metrics


def test_competition_audit_with_tiny_runs(bundle, class_split, original, retrained, retrained_b):
    def jitter(m, s):
        out = copy.deepcopy(m)
        g = torch.Generator().manual_seed(s)
        with torch.no_grad():
            out.head.bias.add_(0.05 * torch.randn(out.head.bias.shape, generator=g))
        return out

    runs_r = [jitter(retrained, s) for s in range(4)]
    same = evaluate(
        retrained,
        bundle,
        class_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(
            extra_models={
                "unlearned_runs": [jitter(retrained, s) for s in range(10, 14)],
                "retrained_runs": runs_r,
                "ceiling_runs": [jitter(retrained, s) for s in range(20, 24)],
            }
        ),
        options=EvalOptions(metrics=["competition_lite"], audit_options={"competition_lite": {"bootstrap": 50}}),
    )
    far = evaluate(
        original,
        bundle,
        class_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(extra_models={"unlearned_runs": [jitter(original, s) for s in range(4)], "retrained_runs": runs_r}),
        options=EvalOptions(metrics=["competition_lite"], audit_options={"competition_lite": {"bootstrap": 50}}),
    )
    a, b = same["extras"]["competition_lite"], far["extras"]["competition_lite"]
    assert a["N"] == 4 and a["thresholds_per_unit"] == 50 and a["variant"] == "lite"
    assert a["competition_forget_quality"] > b["competition_forget_quality"]
    assert b["competition_forget_quality"] == 0.0  # the original is perfectly separable on the forget class
    assert "competition_ceiling_forget_quality" in a and len(a["eps_per_example"]) == len(class_split.forget)


def test_forward_outputs_are_remembered_per_model_and_split(monkeypatch):
    """A bench evaluates the same original/retrained models once per method: with a shared cache their forward
    pass runs once; without one nothing is remembered."""
    import torch

    from unlearnkit.evaluation import EvaluationCache, evaluate, suite
    from unlearnkit.testing import tiny_bundle, tiny_model, tiny_split

    calls = []
    real = suite._forward

    def counting(model, ds, *a, **k):
        calls.append(id(model))
        yield from real(model, ds, *a, **k)

    monkeypatch.setattr(suite, "_forward", counting)
    b, s = tiny_bundle(), tiny_split("class:1")
    orig, ret = tiny_model(seed=0), tiny_model(seed=1)
    cache = EvaluationCache()
    first = evaluate(
        tiny_model(seed=2), b, s, original=orig, retrained=ret, device="cpu", options=EvalOptions(cache=cache)
    )
    n_first = len(calls)
    unl = tiny_model(seed=3)
    with torch.no_grad():
        unl.head.weight.add_(1.0)
    second = evaluate(unl, b, s, original=orig, retrained=ret, device="cpu", options=EvalOptions(cache=cache))
    assert len(calls) - n_first == n_first // 3  # only the new unlearned model is run again
    assert first["models"]["original"]["metrics"] == second["models"]["original"]["metrics"]
    n_second = len(calls)
    uncached = evaluate(unl, b, s, original=orig, retrained=ret, device="cpu")
    assert len(calls) - n_second == n_first  # cache=None: every model runs again
    assert uncached["models"] == second["models"]


def test_metric_values_are_remembered_per_model_reference_and_split(monkeypatch):
    """The SVC attack of the original/retrained models runs once per (model, reference, split), not per method;
    a new retrained reference or another split computes again, and the values equal a fresh computation."""
    from unlearnkit.evaluation import EvaluationCache, evaluate, suite
    from unlearnkit.testing import tiny_bundle, tiny_model, tiny_split

    fresh = evaluate(
        tiny_model(seed=2),
        tiny_bundle(),
        tiny_split("class:1"),
        original=tiny_model(seed=0),
        retrained=tiny_model(seed=1),
        device="cpu",
    )
    calls = []
    cls = suite.METRICS.get("mia_efficacy_forget")
    real = cls.compute

    def counting(self):
        calls.append(1)
        return real(self)

    monkeypatch.setattr(cls, "compute", counting)
    b, s = tiny_bundle(), tiny_split("class:1")
    orig, ret = tiny_model(seed=0), tiny_model(seed=1)
    cache = EvaluationCache()
    first = evaluate(
        tiny_model(seed=2), b, s, original=orig, retrained=ret, device="cpu", options=EvalOptions(cache=cache)
    )
    assert len(calls) == 3
    assert first["models"]["original"]["metrics"] == fresh["models"]["original"]["metrics"]
    evaluate(tiny_model(seed=3), b, s, original=orig, retrained=ret, device="cpu", options=EvalOptions(cache=cache))
    assert len(calls) == 4  # only the new unlearned model
    other_ref = evaluate(
        tiny_model(seed=3),
        b,
        s,
        original=orig,
        retrained=tiny_model(seed=4),
        device="cpu",
        options=EvalOptions(cache=cache),
    )
    assert len(calls) == 7  # the KL/JS of every model depend on the reference: all recomputed
    assert (
        other_ref["models"]["original"]["metrics"]["kl_to_retrained_forget"]
        != first["models"]["original"]["metrics"]["kl_to_retrained_forget"]
    )
    evaluate(
        tiny_model(seed=3),
        b,
        tiny_split("class:2"),
        original=orig,
        retrained=ret,
        device="cpu",
        options=EvalOptions(cache=cache),
    )
    assert len(calls) == 10
    evaluate(tiny_model(seed=3), b, s, original=orig, retrained=ret, device="cpu")
    assert len(calls) == 13  # no cache: every model's attack runs


def test_evaluation_cache_is_bounded_and_counts_lookups():
    from unlearnkit.evaluation import EvaluationCache, evaluate
    from unlearnkit.testing import tiny_bundle, tiny_model, tiny_split

    cache = EvaluationCache(max_entries=2)
    b, s = tiny_bundle(), tiny_split("class:1")
    evaluate(tiny_model(seed=2), b, s, retrained=tiny_model(seed=1), device="cpu", options=EvalOptions(cache=cache))
    assert cache.hits == 0 and cache.misses > 0
    assert len(cache) == 4  # 2 forward passes (of 2 models × 4 splits) + 2 value entries
    cache.clear()
    assert len(cache) == 0 and cache.misses == 0
    with pytest.raises(ValueError, match="at least 1"):
        EvaluationCache(max_entries=0)


def test_metric_and_audit_options_are_typed_and_checked(bundle, class_split, original, retrained):
    from unlearnkit.evaluation import EvaluationSuite, MetricOptions

    with pytest.raises(ConfigError, match="unknown metric option 'reproduc'; valid options: reproduce, retain_limit"):
        EvaluationSuite(metric_options={"reproduc": True})
    with pytest.raises(ConfigError, match="reproduce must be True or False"):
        MetricOptions(reproduce="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="retain_limit"):
        METRICS.get("mia_efficacy_forget")({"retain_limit": -1})
    assert METRICS.get("mia_efficacy_forget_m_entropy")({"reproduce": True}).options.reproduce is True
    with pytest.raises(ConfigError, match=r"unknown option 'max_step' of audit relearn_time; valid options: .*steps"):
        evaluate(
            original,
            bundle,
            class_split,
            retrained=retrained,
            device="cpu",
            options=EvalOptions(metrics="relearn_time", audit_options={"relearn_time": {"max_step": 3}}),
        )
    with pytest.raises(UnknownNameError):
        EvaluationSuite(audit_options={"relearn": {}})


def test_metric_metadata_lives_on_the_classes_and_audits():
    from unlearnkit.evaluation import AUDITS, metric_infos

    infos = metric_infos()
    for name in METRICS.names():
        cls = METRICS.get(name)
        assert cls.__name__ != "type" and cls.name == name
        assert infos[name] == cls.info() and infos[name].summary
    for name in AUDITS.names():
        assert all(infos[o.name] == o and o.kind == "audit" for o in AUDITS.get(name).outputs)
    assert infos["runtime_setup_seconds"].unit == "s" and infos["runtime_update_seconds"].direction == "lower"
    assert {"runtime_setup_seconds", "runtime_update_seconds"} <= {r["name"] for r in metric_table()}
    assert (
        list(infos).index("accuracy_forget")
        < list(infos).index("mia_efficacy_forget")
        < list(infos).index("avg_gap_to_retrained")
    )


def test_runtime_parts_are_recorded_beside_the_runtime(bundle, random_split, original, retrained):
    rec = evaluate(
        original,
        bundle,
        random_split,
        retrained=retrained,
        device="cpu",
        run=RunInfo(runtime_seconds=3.0, runtime_setup_seconds=1.0, runtime_update_seconds=1.5),
        options=EvalOptions(metrics="-mia_efficacy_forget"),
    )
    un = rec["models"]["unlearned"]
    assert un["metrics"]["runtime_setup_seconds"] == un["runtime_setup_seconds"] == 1.0
    assert un["metrics"]["runtime_update_seconds"] == un["runtime_update_seconds"] == 1.5
    assert rec["metric_meta"]["runtime_update_seconds"] == {"unit": "s", "higher_is_better": False}


def test_per_class_test_accuracy_is_recorded_for_classwise_runs_only():
    import numpy as np

    from unlearnkit.evaluation import evaluate
    from unlearnkit.testing import tiny_bundle, tiny_model, tiny_split
    from unlearnkit.training import accuracy

    b, model = tiny_bundle(), tiny_model(seed=0)
    rec = evaluate(model, b, tiny_split("class:1"), retrained=tiny_model(seed=1), device="cpu")
    per_class = rec["models"]["unlearned"]["metrics"]["per_class_accuracy_test"]
    y = b.test.targets.numpy()
    expected = [accuracy(model, b.test.subset(np.flatnonzero(y == c)), device="cpu") for c in range(b.info.num_classes)]
    assert np.allclose(per_class, expected)
    assert "per_class_accuracy_test" not in rec["gaps_to_retrained"]
    rnd = evaluate(model, b, tiny_split("random:0.25"), retrained=tiny_model(seed=1), device="cpu")
    assert "per_class_accuracy_test" not in rnd["models"]["unlearned"]["metrics"]
