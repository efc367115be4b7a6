"""`unlearnkit eval` in-process on checkpoints written to tmp_path."""

from __future__ import annotations

import json

import pytest

from unlearnkit.cli import main
from unlearnkit.evaluation import read_record
from unlearnkit.models import save_model
from unlearnkit.testing import tiny_model


@pytest.fixture
def checkpoints(tmp_path, original, retrained, class_split):
    paths = {}
    for role, m in (("original", original), ("retrained", retrained), ("unlearned", retrained)):
        paths[role] = save_model(m, tmp_path / role / "model.safetensors")
    (tmp_path / "retrained" / "meta.json").write_text(
        json.dumps({"role": "retrained", "wall_seconds": 12.0, "split_sha256": class_split.sha256})
    )
    return paths


def _args(tmp_path, p, *extra):
    return [
        "eval",
        "--dataset",
        "synthetic",
        "--forget",
        "class:1",
        "--model",
        str(p["unlearned"]),
        "--retrained",
        str(p["retrained"]),
        "--original",
        str(p["original"]),
        "--out",
        str(tmp_path / "out"),
        "--device",
        "cpu",
        *extra,
    ]


def test_eval_writes_record_and_prints_table(tmp_path, checkpoints, capsys):
    assert main(_args(tmp_path, checkpoints, "--metrics", "cka")) == 0
    out = capsys.readouterr().out
    assert "accuracy_forget" in out and "unlearned" in out
    rec = read_record(tmp_path / "out" / "record.json")
    assert rec["gaps_to_retrained"]["avg_gap_to_retrained"] == 0.0  # the unlearned checkpoint is the retrained one
    assert rec["models"]["retrained"]["runtime_seconds"] == 12.0  # from the retrained folder's meta.json
    assert rec["models"]["original"]["metrics"]["cka_to_retrained_forget"] <= 1.0
    assert str(tmp_path) not in (tmp_path / "out" / "record.json").read_text()  # no absolute paths


def test_eval_refuses_split_mismatch(tmp_path, checkpoints, capsys):
    args = _args(tmp_path, checkpoints)
    args[args.index("class:1")] = "class:2"
    assert main(args) == 2
    assert "was trained for split" in capsys.readouterr().err
    assert not (tmp_path / "out" / "record.json").exists()


def test_eval_split_json_is_checked_too(tmp_path, checkpoints, bundle, capsys):
    from unlearnkit.data import split_for

    (tmp_path / "retrained" / "meta.json").unlink()
    split_for(bundle, "class:3", 0).save(tmp_path / "retrained" / "split.json")
    assert main(_args(tmp_path, checkpoints)) == 2
    assert "was trained for split" in capsys.readouterr().err


def test_eval_refuses_other_num_classes(tmp_path, checkpoints, capsys):
    checkpoints["unlearned"] = save_model(tiny_model(num_classes=5), tmp_path / "five" / "model.safetensors")
    assert main(_args(tmp_path, checkpoints)) == 2
    assert "num_classes=5" in capsys.readouterr().err


def test_eval_missing_checkpoint(tmp_path, checkpoints, capsys):
    checkpoints["original"] = tmp_path / "nope.safetensors"
    assert main(_args(tmp_path, checkpoints)) == 2
    assert "does not exist" in capsys.readouterr().err


def test_library_does_not_import_the_cli():
    """argparse handling and rich tables live in the `unlearnkit.cli` package; no other module imports them."""
    import ast
    from pathlib import Path

    import unlearnkit

    root = Path(unlearnkit.__file__).parent
    banned = {"argparse", "rich.table", "unlearnkit.cli"}
    found = []
    for path in root.rglob("*.py"):
        if path.is_relative_to(root / "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [("." * node.level) + (node.module or "")]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            found += [f"{path.relative_to(root)}: {n}" for n in names if n in banned or n.lstrip(".") == "cli"]
    assert found == []
