"""Bench specs: parsing, run keys, skips, and rejection of bad specs with every problem listed at once."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from unlearnkit.bench.spec import load_spec, parse_spec, plan_runs, run_key
from unlearnkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def _problems(text: str, tmp_path: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_spec(text, base_dir=tmp_path or ".")
    msg = str(info.value)
    assert msg.count("\n  - ") == len(info.value.problems)  # one problem per line, all in the message
    return info.value.problems


GOOD = """
[grid]
datasets = ["synthetic"]
models = ["small_cnn"]
forget = ["class:0"]
seeds = [0]

[[methods]]
name = "fake_any"
"""


def test_tiny_spec_expands_to_the_full_grid_with_skips(write_spec):
    spec = load_spec(write_spec(seeds="[0, 1, 2]"))
    assert spec.datasets == ("synthetic",) and spec.models == ("small_cnn",) and spec.seeds == (0, 1, 2)
    assert [f.spec for f in spec.forget] == ["class:0", "random:0.1"]
    assert [m.label for m in spec.methods] == ["fake_any", "fake_any-lr0.5", "fake_class_only"]
    runs = plan_runs(spec)
    assert len(runs) == 2 * 3 * 3
    skipped = [r for r in runs if r.skip_reason]
    assert {(r.method.name, r.forget.kind) for r in skipped} == {("fake_class_only", "random")}
    assert len(skipped) == 3 and "class" in skipped[0].skip_reason
    assert len({r.key for r in runs}) == len(runs)
    # seeds before methods: the first three runs share seed 0 and cover every method
    assert [(r.seed, r.method.label) for r in runs[:3]] == [
        (0, "fake_any"),
        (0, "fake_any-lr0.5"),
        (0, "fake_class_only"),
    ]


def test_run_key_ignores_labels_and_order_and_coerces_override_types(tmp_path):
    a = parse_spec(GOOD.replace('name = "fake_any"', 'name = "fake_any"\nset = { lr = 1, epochs = 2 }'))
    b = parse_spec(GOOD.replace('name = "fake_any"', 'name = "fake_any"\nlabel = "x"\nset = { epochs = 2, lr = 1.0 }'))
    ka, kb = plan_runs(a)[0].key, plan_runs(b)[0].key
    assert ka == kb
    assert a.methods[0].overrides == {"epochs": 2, "lr": 1.0}
    assert a.methods[0].label == "fake_any[epochs=2,lr=1.0]"
    # every ingredient of the key changes it
    base = {
        "dataset": "synthetic",
        "model": "small_cnn",
        "model_args": {},
        "forget": "class:0",
        "method": "fake_any",
        "overrides": {"lr": 1.0},
        "seed": 0,
    }
    k0 = run_key(**base)
    for change in (
        {"dataset": "digits"},
        {"model": "resnet18"},
        {"model_args": {"width": 16}},
        {"forget": "class:1"},
        {"method": "fake_class_only"},
        {"overrides": {"lr": 0.5}},
        {"seed": 1},
    ):
        assert run_key(**{**base, **change}) != k0, change


def test_aliases_are_canonicalised():
    spec = parse_spec(GOOD.replace('"small_cnn"', '"smallcnn"').replace('"class:0"', '" class:0 "'))
    assert spec.models == ("small_cnn",) and spec.forget[0].spec == "class:0"


def test_model_args_and_metrics_are_passed_through():
    text = GOOD.replace('models = ["small_cnn"]', 'models = ["resnet18"]') + "\n[model_args.resnet18]\nwidth = 16\n"
    spec = parse_spec('metrics = ["kl_to_retrained_forget"]\n' + text)
    assert spec.model_args == {"resnet18": {"width": 16}} and spec.metrics == ("kl_to_retrained_forget",)
    assert plan_runs(spec)[0].model_args == {"width": 16}


def test_indices_spec_is_read_relative_to_the_spec_file(tmp_path):
    (tmp_path / "forget.json").write_text(json.dumps([1, 2, 3]))
    spec = parse_spec(GOOD.replace('"class:0"', '"indices:forget.json"'), base_dir=tmp_path)
    f = spec.forget[0]
    assert f.kind == "random" and f.spec.startswith("indices:3@")  # no path in keys or records
    assert f.arg == f"indices:{tmp_path / 'forget.json'}"


# ------------------------------------------------------------------------------------------- bad specs
def test_unknown_keys_everywhere(tmp_path):
    text = 'nmae = "x"\n' + GOOD.replace("seeds = [0]", "seeds = [0]\nseed = 1").replace(
        'name = "fake_any"', 'name = "fake_any"\nsett = { lr = 1 }'
    )
    problems = _problems(text)
    assert any("spec: unknown key 'nmae'" in p and "'name'" in p for p in problems)
    assert any("grid: unknown key 'seed'" in p and "'seeds'" in p for p in problems)
    assert any("unknown key 'sett'" in p and "'set'" in p for p in problems)
    assert len(problems) == 3


def test_unknown_names_are_reported_with_suggestions():
    text = (
        GOOD.replace('"synthetic"', '"fashon_mnist"')
        .replace('"small_cnn"', '"resnet81"')
        .replace('"fake_any"', '"fake_ani"')
    )
    problems = _problems(text)
    assert len(problems) == 3
    assert "grid.datasets[0]" in problems[0] and "fashion_mnist" in problems[0]
    assert "grid.models[0]" in problems[1] and "resnet18" in problems[1]
    assert "methods[0]" in problems[2] and "fake_any" in problems[2]


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        ('datasets = []\nmodels = ["small_cnn"]\nforget = ["class:0"]\nseeds = [0]', "grid.datasets: is empty"),
        ('datasets = ["synthetic"]\nmodels = ["small_cnn"]\nforget = ["class:0"]\nseeds = []', "grid.seeds: is empty"),
        ('datasets = ["synthetic"]\nmodels = ["small_cnn"]\nseeds = [0]', "grid.forget: missing"),
    ],
)
def test_empty_or_missing_grid_entries(grid, needle):
    problems = _problems(f'[grid]\n{grid}\n\n[[methods]]\nname = "fake_any"\n')
    assert any(needle in p for p in problems), problems


def test_no_grid_and_no_methods():
    problems = _problems('name = "x"\n')
    assert any(p.startswith("grid: missing") for p in problems)
    assert any(p.startswith("methods: missing") for p in problems)


def test_wrong_types_all_listed():
    text = """
    name = 3
    metrics = "accuracy_forget"
    [grid]
    datasets = "synthetic"
    models = ["small_cnn"]
    forget = ["class:0"]
    seeds = [0, "1", -2, true]
    [model_args.small_cnn]
    width = [1, 2]
    [[methods]]
    name = "fake_any"
    set = 5
    label = ""
    """
    problems = _problems(text.replace("\n    ", "\n"))
    joined = "\n".join(problems)
    for needle in (
        "name: expected a string",
        "metrics: expected a list of strings",
        "grid.datasets: expected a list",
        "grid.seeds: expected a list of non-negative integers",
        "model_args.small_cnn.width: expected",
        ".set: expected a table",
        ".label: expected a non-empty string",
    ):
        assert needle in joined, needle
    assert len(problems) == 7


@pytest.mark.parametrize(
    ("forget", "needle"),
    [
        ("class", "malformed forget spec"),
        ("class:a", "class needs integers"),
        ("random:1.5", "strictly between"),
        ("random:x", "random needs a fraction"),
        ("bogus:3", "'bogus'"),
        ("class:1,1", "twice"),
        ("none", "forgets nothing"),
        ("indices:missing.json", "grid.forget[0]"),
    ],
)
def test_malformed_forget_specs(forget, needle, tmp_path):
    problems = _problems(GOOD.replace('"class:0"', f'"{forget}"'), tmp_path)
    assert len(problems) == 1 and needle in problems[0], problems


def test_bad_method_options_are_checked_against_the_config():
    text = GOOD.replace(
        'name = "fake_any"',
        'name = "fake_any"\nset = { lr = -1.0 }\n\n[[methods]]\nname = "fake_class_only"\nset = { momentun = 0.9 }',
    )
    problems = _problems(text)
    assert len(problems) == 2
    assert "methods[0] (fake_any).set" in problems[0] and "`lr` must be > 0" in problems[0]
    assert "methods[1] (fake_class_only).set" in problems[1] and "'momentun'" in problems[1]


def test_duplicate_labels_methods_and_seeds():
    text = GOOD.replace("seeds = [0]", "seeds = [0, 0]")
    text = text.replace('forget = ["class:0"]', 'forget = ["class:0", "class:0"]')
    text += '\n[[methods]]\nname = "fake_any"\n'
    problems = _problems(text)
    joined = "\n".join(problems)
    assert "grid.seeds: repeated" in joined and "grid.forget: repeated" in joined
    assert "label 'fake_any' is used by 2 entries" in joined and "appears 2 times" in joined


def test_model_args_for_a_model_outside_the_grid_and_bad_runner():
    text = 'runner = "no_such_module:fn"\n' + GOOD + "\n[model_args.resnet18]\nwidth = 16\n"
    problems = _problems(text)
    assert any("model_args.resnet18" in p and "not in grid.models" in p for p in problems)
    assert any(p.startswith("runner: ") and "module:function" in p for p in problems)


def test_runner_key_never_imports_a_module(tmp_path, monkeypatch):
    """Issue 11 item 6: ``runner = "module:function"`` is refused without importing the module."""
    import sys

    (tmp_path / "evil_runner_mod.py").write_text("raise SystemExit('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    problems = _problems('runner = "evil_runner_mod:fn"\n' + GOOD)
    assert "evil_runner_mod" not in sys.modules
    assert any("not accepted" in p for p in problems)
    problems = _problems('runner = "no_such_runner"\n' + GOOD)
    assert any("unknown bench runner 'no_such_runner'" in p for p in problems)


def test_unknown_metric_names_are_rejected():
    problems = _problems('metrics = ["accuracy_forget", "acurracy_retain_zz"]\n' + GOOD)
    assert len(problems) == 1 and problems[0].startswith("metrics[1]:") and "acurracy_retain_zz" in problems[0]


def test_toml_syntax_error_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_spec("[grid\n")
    with pytest.raises(ConfigError, match="not found"):
        load_spec(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------------- shipped spec
FASHION_METHODS = {
    "retrain",
    "ft",
    "ga",
    "neggrad_plus",
    "rl",
    "ff",
    "iu",
    "l1_sparse",
    "salun",
    "bt",
    "scrub",
    "boundary_shrink",
    "boundary_expand",
    "ssd",
    "sfr_on",
    "weight_filtering",
}


def test_fashion_mnist_benchmark_spec_shape():
    raw = tomllib.loads((REPO / "benchmarks" / "fashion_mnist.toml").read_text(encoding="utf-8"))
    assert raw["grid"] == {
        "datasets": ["fashion_mnist"],
        "models": ["small_cnn"],
        "forget": ["class:0", "random:0.1"],
        "seeds": [0, 1, 2],
    }
    assert {m["name"] for m in raw["methods"]} == FASHION_METHODS
    assert "runner" not in raw


def test_fashion_mnist_benchmark_spec_validates_when_all_methods_exist():
    from unlearnkit.methods import METHODS

    assert set(METHODS) >= FASHION_METHODS
    spec = load_spec(REPO / "benchmarks" / "fashion_mnist.toml")
    runs = plan_runs(spec)
    skipped = {r.method.name for r in runs if r.skip_reason}
    assert all(r.forget.kind == "random" for r in runs if r.skip_reason)
    assert {"boundary_shrink", "boundary_expand", "weight_filtering"} <= skipped
    assert len(runs) == 16 * 2 * 3
