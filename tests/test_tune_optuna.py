"""`unlearnkit tune` on Optuna: search-space parsing, resume from SQLite, pruning, the time budget, the output."""

from __future__ import annotations

import json
import shlex
import sys
import tomllib

import pytest

from unlearnkit.errors import ConfigError, DivergenceError

optuna = pytest.importorskip("optuna")

from unlearnkit import tune as tune_mod  # noqa: E402
from unlearnkit.bench._testing import fake_methods_registered  # noqa: E402
from unlearnkit.cli import main  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.tune import Param, check_space, parse_search_space, run_study, search_space  # noqa: E402


# ------------------------------------------------------------------------------------------------ search space
def test_search_space_parses_ranges_choices_and_types():
    sp = parse_search_space(
        {
            "lr": {"low": 1e-4, "high": 0.1, "log": True},
            "epochs": {"choices": [1, 2, 3, 5, 2]},
            "mask_ratio": {"low": 0.1, "high": 0.9},
            "batch_size": {"low": 64, "high": 256, "step": 64},
        },
        "salun",
    )
    assert sp["lr"] == Param("lr", "float", low=1e-4, high=0.1, log=True)
    assert sp["epochs"].kind == "categorical" and sp["epochs"].choices == (1, 2, 3, 5)  # duplicates dropped
    assert sp["mask_ratio"].kind == "float" and not sp["mask_ratio"].log
    assert sp["batch_size"].kind == "int" and sp["batch_size"].step == 64


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"lrr": {"low": 0.1, "high": 1.0}}, "did you mean 'lr'"),
        ({"lr": {"low": 0.1, "hi": 1.0}}, "unknown key(s) 'hi'"),
        ({"lr": {"low": 0.1, "high": 0.01}}, "must be below high"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
        ({"lr": {"low": 0.01, "high": 0.1, "log": True, "step": 0.01}}, "step cannot be combined with log"),
        ({"lr": {"low": 0.01}}, "needs both low and high"),
        ({"lr": {"low": "a", "high": 0.1}}, "finite numbers"),
        ({"epochs": {"low": 1.5, "high": 4}}, "integer field"),
        ({"optimizer": {"low": 1, "high": 2}}, "search it with choices"),
        ({"epochs": {"choices": []}}, "non-empty list"),
        ({"epochs": {"choices": [1], "low": 1}}, "cannot be combined"),
        ({"lr_milestones": {"choices": [[1, 2]]}}, "lists are not searchable"),
        ({"lr": 0.1}, "expected a table"),
    ],
)
def test_search_space_refuses_bad_tables(table, message):
    method = "scrub" if "lr_milestones" in table else "ft"
    with pytest.raises(ConfigError, match="bad search space") as info:
        parse_search_space(table, method)
    assert message in str(info.value)


def test_search_space_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        parse_search_space({"nokey": {"low": 1, "high": 2}, "lr": {"low": 1.0, "high": 0.5}}, "ft")
    assert "nokey" in str(info.value) and "must be below high" in str(info.value)


def test_out_of_range_values_are_refused_before_compute():
    sp = parse_search_space({"lr": {"low": -1.0, "high": 0.1}}, "ft")
    with pytest.raises(ConfigError, match=r"lr = -1\.0 is not a valid value"):
        check_space("ft", sp, dataset="synthetic", model="small_cnn", kind="class")


def test_every_method_with_knobs_declares_a_valid_search_space():
    from unlearnkit.methods import _preset_names, load_presets

    declared = []
    for name in METHODS.names():
        presets = load_presets(name)
        if "search" not in presets:
            continue
        sp = search_space(name)
        assert sp, name
        for kind in sorted(METHODS.get(name).requires.split_kinds):
            for dataset in ("fashion_mnist", "digits", None):
                check_space(name, sp, dataset=dataset, model="small_cnn", kind=kind)
        assert not any(p.startswith("search") for p in _preset_names(presets))  # not offered as --preset
        declared.append(name)
    must = {"ft", "rl", "ga", "neggrad_plus", "salun", "l1_sparse", "scrub", "bt", "sfr_on", "ssd", "ff", "iu"}
    assert must <= set(declared)
    assert {"mask_ratio", "lr", "epochs"} <= set(search_space("salun"))
    assert "beta" in search_space("neggrad_plus") and "alpha" in search_space("iu")


# ------------------------------------------------------------------------------------------------ study mechanics
def test_a_killed_study_resumes_from_sqlite(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    seen: list[int] = []

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        if trial.number == 2 and not seen.count(-1):
            seen.append(-1)
            raise KeyboardInterrupt  # the user's Ctrl-C in the middle of trial 2
        seen.append(trial.number)
        return (x - 0.3) ** 2

    with pytest.raises(KeyboardInterrupt):
        run_study(objective, study_name="s", storage=storage, n_trials=5, prune=False)
    assert seen == [0, 1, -1]
    study = run_study(objective, study_name="s", storage=storage, n_trials=5, prune=False)  # a second "process"
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 5  # the interrupted trial counts as failed, the new call adds the rest
    assert seen[3:] == [3, 4]  # the numbering continues
    again = run_study(objective, study_name="s", storage=storage, n_trials=5, prune=False)
    assert len(again.trials) == 5  # the study already holds its trials: nothing more runs


def test_median_pruning_stops_bad_trials_after_the_first_signal(tmp_path):
    second_runs: list[float] = []

    def objective(trial):
        x = trial.suggest_float("x", 0.0, 1.0)
        first = x  # the first original's gap
        trial.report(first, step=0)
        if trial.should_prune():
            raise optuna.TrialPruned()
        second_runs.append(x)
        return x

    study = run_study(objective, study_name="p", storage=None, n_trials=20, prune=True, n_startup_trials=3)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "a trial worse than the median after its first signal must be pruned"
    assert len(second_runs) == 20 - len(pruned)  # a pruned trial never ran its second original
    assert all(t.intermediate_values[0] > 0 for t in pruned)


def test_tpe_is_seeded(tmp_path):
    def objective(trial):
        return trial.suggest_float("x", 0.0, 1.0)

    a = run_study(objective, study_name="a", n_trials=6, sampler_seed=3, prune=False)
    b = run_study(objective, study_name="b", n_trials=6, sampler_seed=3, prune=False)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


# ------------------------------------------------------------------------------------------------ tune objective
def _gap_by_lr(monkeypatch):
    calls: list[float] = []

    def fake_gap(unlearned, retrained, bundle, split, device, *, cache=None):
        calls.append(1.0)
        return 1.0

    monkeypatch.setattr(tune_mod, "avg_gap", fake_gap)
    return calls


def test_over_budget_trials_are_pruned_and_say_so(monkeypatch):
    _gap_by_lr(monkeypatch)
    with fake_methods_registered(), pytest.raises(DivergenceError, match="over the time budget"):
        tune_mod.tune(
            "fake_any", "synthetic", "small_cnn", "class:1", {"lr": [0.1, 0.2]}, seeds=(10,), budget=1e-12, device="cpu"
        )


def test_over_budget_trials_are_penalised_when_asked(monkeypatch):
    _gap_by_lr(monkeypatch)
    with fake_methods_registered():
        res = tune_mod.tune(
            "fake_any",
            "synthetic",
            "small_cnn",
            "class:1",
            {"lr": [0.1, 0.2]},
            seeds=(10,),
            budget=1e-12,
            over_budget="penalise",
            device="cpu",
        )
        free = tune_mod.tune(
            "fake_any", "synthetic", "small_cnn", "class:1", {"lr": [0.1]}, seeds=(10,), budget=None, device="cpu"
        )
    assert all(t["state"] == "COMPLETE" and t["penalised"] for t in res.trials)
    assert all(t["avg_gap"] > 1.0 and "over_budget" in t for t in res.trials)  # gap 1.0 + the penalty
    assert free.trials[0]["avg_gap"] == 1.0 and "penalised" not in free.trials[0]


def test_tune_rejects_a_space_before_training(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained before the space was checked")

    monkeypatch.setattr(tune_mod, "train_or_load", boom)
    with pytest.raises(ConfigError, match="grid sampler needs choices"):
        tune_mod.tune("ft", "synthetic", "small_cnn", "class:1", sampler="grid", device="cpu")
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        tune_mod.tune("ft", "synthetic", "small_cnn", "class:1", {"lrr": [0.1]}, device="cpu")


# ------------------------------------------------------------------------------------------------ CLI output
def test_cli_writes_ranking_study_command_and_a_preset_block(tmp_path, capsys, monkeypatch):
    _gap_by_lr(monkeypatch)
    out = tmp_path / "t" / "tune.json"
    argv = ["tune", "--dataset", "synthetic", "--model", "small_cnn", "--forget", "class:1", "--method", "fake_any"]
    argv += ["--device", "cpu", "--no-progress", "--seeds", "10", "--budget", "none", "--n-trials", "3"]
    argv += ["--grid", "lr=0.1,0.2", "--sampler", "tpe", "--set", "epochs=2", "--out", str(out)]
    with fake_methods_registered():
        assert main(argv) == 0
        res = json.loads(out.read_text())
        assert (tmp_path / "t" / "study.db").is_file()  # the default storage, beside --out
        assert res["storage"] == f"sqlite:///{tmp_path / 't' / 'study.db'}"
        assert res["study_name"].startswith("fake_any-synthetic-small_cnn-class:1-v100-s10-tpe")
        assert len(res["ranking"]) == 3 and res["best"]["avg_gap"] == 1.0
        assert res["best_config"]["epochs"] == 2 and res["best_config"]["lr"] in (0.1, 0.2)
        block = tomllib.loads(res["preset_toml"])["synthetic"]["small_cnn"]["class"]
        assert block["epochs"] == 2 and block["lr"] == res["best_config"]["lr"]
        assert res["study_name"] in block["source"] and res["command"] in block["source"]
        assert res["command"].startswith("unlearnkit tune ") and "--storage" in res["command"]
        printed = capsys.readouterr().out
        assert "preset block" in printed and "reproduce: unlearnkit tune" in printed
        # the printed command resumes the same study: 3 trials are there already, 2 more run
        cmd = shlex.split(res["command"])[1:]
        cmd[cmd.index("--n-trials") + 1] = "5"
        assert main([*cmd, "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
        assert [r["number"] for r in json.loads(out.read_text())["ranking"]].count(4) == 1


def test_cli_fails_when_every_trial_failed(tmp_path, capsys, monkeypatch):
    def diverge(*a, **k):
        raise DivergenceError("loss became NaN at step 3")

    monkeypatch.setattr(tune_mod, "avg_gap", diverge)
    argv = ["tune", "--dataset", "synthetic", "--model", "small_cnn", "--forget", "class:1", "--method", "fake_any"]
    argv += ["--device", "cpu", "--seeds", "10", "--grid", "lr=0.1,0.2", "--out", str(tmp_path / "x.json")]
    with fake_methods_registered():
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert "every one of the 2 trial(s)" in err and err.count("loss became NaN") >= 2
    assert not (tmp_path / "x.json").exists()


def test_cli_without_optuna_says_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    argv = ["tune", "--dataset", "synthetic", "--model", "small_cnn", "--forget", "class:1", "--method", "ft"]
    assert main([*argv, "--device", "cpu"]) == 2
    assert "pip install 'unlearnkit[tune]'" in capsys.readouterr().err
