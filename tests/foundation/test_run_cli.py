import json

import pytest

from unlearnkit.cli import main

BASE = ["run", "--dataset", "synthetic", "--model", "small_cnn", "--device", "cpu"]


def test_run_writes_record_weights_and_split(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(BASE + ["--forget", "class:1", "--method", "ft", "--set", "epochs=1", "--out", str(out)]) == 0
    rec = json.loads((out / "record.json").read_text())
    assert rec["method"]["name"] == "ft" and rec["method"]["config"]["epochs"] == 1
    assert {"original", "retrained", "unlearned"} <= set(rec["models"])
    assert "avg_gap_to_retrained" in rec["gaps_to_retrained"]
    assert (out / "unlearned.safetensors").is_file() and (out / "split.json").is_file()
    assert "accuracy_forget" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--forget", "class:1", "--method", "salunn"], "did you mean 'salun'"),
    (["--forget", "random:0.1", "--method", "boundary_shrink"], "supports only class"),
    (["--forget", "class:1", "--method", "ft", "--set", "epoch=2"], "did you mean 'epochs'"),
    (["--forget", "class:1", "--method", "ft", "--set", "lr=-1"], "lr"),
    (["--forget", "class:9", "--method", "ft"], "outside [0, 4)"),
])
def test_run_bad_input(tmp_path, capsys, extra, message):
    out = tmp_path / "r"
    assert main(BASE + extra + ["--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
