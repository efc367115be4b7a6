"""The checkpoint service: one door (`load_checkpoint` / `save_checkpoint`) for plain models and SISA ensembles,
and the plain-or-SISA choice made in `unlearnkit.jobs.checkpoints` only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from unlearnkit import sisa
from unlearnkit.cache import model_sha256
from unlearnkit.errors import CheckpointError
from unlearnkit.jobs.checkpoints import checkpoint_kind, load_checkpoint, model_kind, save_checkpoint
from unlearnkit.testing import tiny_bundle, tiny_model
from unlearnkit.training import Recipe

SRC = Path(__file__).resolve().parents[2] / "src" / "unlearnkit"


def test_plain_and_sisa_round_trip_through_one_door(tmp_path: Path) -> None:
    plain = tiny_model(seed=1)
    ens = sisa.train_sisa(tiny_model(), tiny_bundle().train, shards=2, slices=1, recipe=Recipe(epochs=1), seed=0)
    for name, model, kind in (("p", plain, "plain"), ("s", ens, "sisa")):
        path = save_checkpoint(model, tmp_path / f"{name}.safetensors")
        assert model_kind(model) == checkpoint_kind(path) == kind
        back = load_checkpoint(path)
        assert type(back) is type(model) and model_sha256(back) == model_sha256(model)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_the_sisa_or_plain_choice_is_made_in_one_place() -> None:
    """Outside the SISA modules themselves, only the checkpoint service calls the SISA file functions."""
    sisa_io = {"save_sisa", "load_sisa", "is_sisa_checkpoint"}
    allowed = {SRC / "sisa.py", SRC / "sisa_files.py", SRC / "jobs" / "checkpoints.py"}
    callers = []
    for path in sorted(SRC.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
                if name in sisa_io:
                    callers.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert callers == []
