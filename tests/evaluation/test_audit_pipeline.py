"""Issue 19, item 1: the pipeline supplies the extra models strong audits need; --audits on the CLI."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from unlearnkit.audit_models import build_audit_models, plan_audit_models
from unlearnkit.cli import main
from unlearnkit.data import split_for
from unlearnkit.evaluation import EvalOptions, RunInfo, evaluate
from unlearnkit.evaluation.levels import resolve_audits
from unlearnkit.methods import UnlearnData
from unlearnkit.pipeline import prepare_method
from unlearnkit.runner import run_method
from unlearnkit.testing import tiny_bundle, tiny_model
from unlearnkit.training import Recipe, train

BASE = ["run", "--dataset", "synthetic", "--model", "small_cnn", "--device", "cpu", "--method", "ft"]


def test_strong_audit_models_are_built_and_reach_ulira_and_competition(monkeypatch):
    bundle = tiny_bundle()
    split = split_for(bundle, "random:0.25", 0)
    trained_without: list[np.ndarray] = []

    def fake_train_or_load(data, model, sp, *, seed=0, **kw):  # a quick recipe instead of the cached default
        trained_without.append(np.asarray(sp.forget))
        net = tiny_model(seed=seed % 1000)
        train(net, data.train.subset(sp.retain), Recipe(epochs=2, batch_size=32, lr=0.05), seed=seed, progress=False)
        return SimpleNamespace(model=net.eval(), meta={"wall_seconds": 0.1})

    monkeypatch.setattr("unlearnkit.oracle.train_or_load", fake_train_or_load)
    original = fake_train_or_load(bundle, "small_cnn", split_for(bundle, None, 0)).model
    retrained = fake_train_or_load(bundle, "small_cnn", split, seed=1).model
    second = fake_train_or_load(bundle, "small_cnn", split, seed=2).model
    method = prepare_method("ft", "synthetic", "small_cnn", "random:0.25", {"epochs": 1})
    unlearned = run_method(method, original, UnlearnData.from_split(bundle, split), device="cpu", seed=0).model
    trained_without.clear()

    plan = plan_audit_models(resolve_audits("strong"), 0, shadows=4, pool=40, train_seconds=0.1, unlearn_seconds=0.1)
    extra = build_audit_models(
        plan,
        bundle=bundle,
        model="small_cnn",
        split=split,
        method=method,
        original=original,
        retrained=retrained,
        unlearned=unlearned,
        noise_floor_model=second,
        seed=0,
        model_kwargs={},
        device="cpu",
    )
    assert extra["retrained_runs"][:2] == [retrained, second] and len(extra["retrained_runs"]) == 4
    assert extra["unlearned_runs"][0] is unlearned and len(extra["unlearned_runs"]) == 4
    sh = extra["ulira"]
    assert len(sh.models) == 4 and sh.in_mask.shape == (4, len(sh.pool))
    assert set(sh.pool) <= set(split.retain)  # the pool is drawn from the retain set
    shadow_forgets = trained_without[-4:]  # each shadow trained without exactly the pool examples it never sees
    for j in range(4):
        np.testing.assert_array_equal(np.sort(shadow_forgets[j]), np.sort(sh.pool[~sh.in_mask[j]]))

    rec = evaluate(
        unlearned,
        bundle,
        split,
        original=original,
        retrained=retrained,
        device="cpu",
        run=RunInfo(extra_models=extra),
        options=EvalOptions(audits="strong"),
    )
    assert rec["evaluation_config"]["audits_skipped"] == {}
    assert 0.0 <= rec["extras"]["ulira_lite"]["ulira_auc"] <= 1.0
    assert rec["extras"]["competition_lite"]["N"] == 4
    assert rec["extras"]["oracle_margins"]["forget"]["K"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([*BASE, "--forget", "class:1", "--audits", "standrd"], "did you mean 'standard'"),
        ([*BASE, "--forget", "class:1", "--audits", "standard,ckaa"], "did you mean 'cka'"),
        ([*BASE, "--forget", "class:1", "--oracles", "2"], "K must be ≥ 3"),
    ],
)
def test_run_refuses_bad_audits_before_compute(tmp_path, capsys, argv, message):
    assert _exit_code([*argv, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_eval_and_bench_refuse_bad_audits(tmp_path, capsys):
    argv = ["eval", "--dataset", "synthetic", "--forget", "class:1", "--model", "u.safetensors"]
    rc = main([*argv, "--retrained", "r.sf", "--audits", "strongg", "--out", str(tmp_path / "e")])
    assert rc == 2 and "did you mean 'strong'" in capsys.readouterr().err
    spec = tmp_path / "spec.toml"
    spec.write_text(
        'audits = "stong"\n[grid]\ndatasets = ["synthetic"]\nmodels = ["small_cnn"]\nforget = ["class:1"]\n'
        'seeds = [0]\n[[methods]]\nname = "ft"\n'
    )
    assert main(["bench", str(spec), "--out", str(tmp_path / "b")]) == 2
    assert "did you mean 'strong'" in capsys.readouterr().err
    assert _exit_code(["bench", str(spec), "--out", str(tmp_path / "b"), "--audits", "none", "--oracles", "1"]) == 2
    assert "oracles" in capsys.readouterr().err


def _exit_code(argv: list[str]) -> int:
    """``main``'s return code, or the code of the SystemExit argparse raises for a flag it refuses."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_run_default_record_holds_standard_audits_and_none_drops_them(tmp_path):
    args = [*BASE, "--forget", "class:1", "--set", "epochs=1"]
    assert main([*args, "--out", str(tmp_path / "std")]) == 0
    assert main([*args, "--audits", "none", "--out", str(tmp_path / "none")]) == 0
    std = json.loads((tmp_path / "std" / "record.json").read_text())
    none = json.loads((tmp_path / "none" / "record.json").read_text())
    assert std["evaluation_config"]["audits"] == ["mia_population", "linear_probe", "cka"]
    assert none["evaluation_config"]["audits"] == []
    u_std, u_none = std["models"]["unlearned"]["metrics"], none["models"]["unlearned"]["metrics"]
    timing = ("runtime", "speedup")  # wall-clock measurements differ between any two runs
    same = [k for k in u_none if not k.startswith(timing) and isinstance(u_none[k], float)]
    assert same and {k: u_std[k] for k in same} == pytest.approx({k: u_none[k] for k in same}, rel=1e-6, abs=1e-9)


@pytest.mark.slow
def test_run_strong_from_the_cli_trains_what_it_needs(tmp_path, capsys):
    """U-LiRA-lite and competition-lite are reachable from the CLI: the pipeline trains their models."""
    assert main([*BASE, "--forget", "random:0.25", "--audits", "strong", "--out", str(tmp_path / "s")]) == 0
    assert "strong audits: 4 retrained oracles, 4 unlearning runs, 8 U-LiRA shadows" in capsys.readouterr().err
    rec = json.loads((tmp_path / "s" / "record.json").read_text())
    assert {"ulira_lite", "competition_lite", "oracle_margins", "relearn_time"} <= set(rec["extras"])
    assert rec["evaluation_config"]["audits_skipped"] == {}
