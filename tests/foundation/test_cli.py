import json
import os

import pytest

from unlearnkit.cli import main


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "forget specs" in out and "train" in out and "run" in out


def test_list(capsys):
    assert main(["list", "datasets"]) == 0
    assert "fashion_mnist" in capsys.readouterr().out
    assert main(["list", "models"]) == 0
    assert "resnet18" in capsys.readouterr().out


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_train_digits_exports_the_cached_original(tmp_path, capsys, digits_original):
    """`train` with the default recipe is served from the run's cache, where the shared digits original is."""
    out = tmp_path / "orig"
    args = ["train", "--dataset", "digits", "--model", "small_cnn", "--seed", "0", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    first = _last_json(capsys)
    assert first["accuracy_test"] >= 90 and first["from_cache"] is True
    meta = json.loads((out / "meta.json").read_text())
    for key in (
        "dataset",
        "model",
        "split_sha256",
        "seed",
        "recipe",
        "accuracy_test",
        "wall_seconds",
        "unlearnkit_version",
    ):
        assert key in meta
    assert meta["cache_key"] == digits_original.trained.meta["cache_key"]
    assert (out / "model.safetensors").is_file() and (out / "split.json").is_file()
    assert not any(os.path.isabs(v) for v in meta.values() if isinstance(v, str))


def test_train_digits_then_cache(tmp_path, capsys, monkeypatch):
    """A request not in the cache trains and stores; the same request again loads it (2 epochs: seconds)."""
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "orig"
    args = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--seed",
        "0",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert _last_json(capsys)["from_cache"] is False
    meta = json.loads((out / "meta.json").read_text())
    assert meta["recipe"]["epochs"] == 2 and (out / "model.safetensors").is_file()
    assert main(args) == 0
    assert _last_json(capsys)["from_cache"] is True


BAD = [
    (["--dataset", "digitz"], "did you mean 'digits'"),
    (["--model", "small_cn"], "did you mean 'small_cnn'"),
    (["--forget", "class:x"], "malformed forget spec"),
    (["--forget", "class:10"], "outside [0, 10)"),
    (["--forget", "random:0"], "strictly between 0 and 1"),
    (["--forget", "random:1"], "strictly between 0 and 1"),
    (["--forget", "class:0,1,2,3,4,5,6,7,8,9"], "whole training set"),
    (["--device", "cuda:7" if not __import__("torch").cuda.is_available() else "tpu"], "device"),
]


@pytest.mark.parametrize(("extra", "message"), BAD)
def test_bad_input_exits_nonzero_without_files(tmp_path, capsys, extra, message):
    args = {"--dataset": "digits", "--model": "small_cnn", "--out": str(tmp_path / "out")}
    for i in range(0, len(extra), 2):
        args[extra[i]] = extra[i + 1]
    argv = ["train"] + [x for kv in args.items() for x in kv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_indices_file_and_missing_data(tmp_path, capsys, monkeypatch):
    (tmp_path / "idx.json").write_text("[3, 3]")
    argv = [
        "train",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--forget",
        f"indices:{tmp_path / 'idx.json'}",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2 and "duplicates" in capsys.readouterr().err
    import unlearnkit.data.datasets as ds

    monkeypatch.delenv("UNLEARNKIT_DATA", raising=False)
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "nowhere")
    argv = [
        "train",
        "--dataset",
        "fashion_mnist",
        "--data-dir",
        str(tmp_path),
        "--model",
        "small_cnn",
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 2 and "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
