import json

import pytest

from unlearnkit.cli import main

BASE = ["run", "--dataset", "synthetic", "--model", "small_cnn", "--device", "cpu"]


def test_run_writes_record_weights_and_split(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*BASE, "--forget", "class:1", "--method", "ft", "--set", "epochs=1", "--out", str(out)]) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["method"]["name"] == "ft" and rec["method"]["config"]["epochs"] == 1
    assert {"original", "retrained", "unlearned"} <= set(rec["models"])
    assert "avg_gap_to_retrained" in rec["gaps_to_retrained"]
    assert (out / "unlearned.safetensors").is_file() and (out / "split.json").is_file()
    assert "accuracy_forget" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--forget", "class:1", "--method", "salunn"], "did you mean 'salun'"),
        (["--forget", "random:0.1", "--method", "boundary_shrink"], "supports only class"),
        (["--forget", "class:1", "--method", "ft", "--set", "epoch=2"], "did you mean 'epochs'"),
        (["--forget", "class:1", "--method", "ft", "--set", "lr=-1"], "lr"),
        (["--forget", "class:9", "--method", "ft"], "outside [0, 4)"),
    ],
)
def test_run_bad_input(tmp_path, capsys, extra, message):
    out = tmp_path / "r"
    assert main(BASE + extra + ["--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


TUNE = [
    "tune",
    "--dataset",
    "synthetic",
    "--model",
    "small_cnn",
    "--device",
    "cpu",
    "--no-progress",
    "--forget",
    "class:1",
    "--method",
    "ft",
    "--set",
    "epochs=1",
    "--seeds",
    "10",
    "--budget",
    "none",
]


def test_tune_ranks_the_grid_and_writes_a_preset_block(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tune.json"
    assert main([*TUNE, "--grid", "lr=0.0,0.05", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    gaps = [r["avg_gap"] for r in res["ranking"]]
    assert sorted(r["config"]["lr"] for r in res["ranking"]) == [0.0, 0.05]
    assert gaps == sorted(gaps)  # best first
    assert res["preset_toml"].startswith("[synthetic.small_cnn.class]")
    assert f"lr = {json.dumps(res['ranking'][0]['config']['lr'])}" in res["preset_toml"]
    assert "epochs = 1" in res["preset_toml"] and "preset block" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--grid", "lrr=0.1,0.2"], "did you mean 'lr'"),
        (["--grid", "lr=-1,0.1"], "lr"),
        (["--grid", "lr"], "key=value"),
    ],
)
def test_tune_bad_grid_is_refused_before_training(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tune.json"
    assert main(TUNE + extra + ["--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "cache").exists()
