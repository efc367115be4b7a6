"""Issue 29 through the CLI and the ledger: a head model trained on the deletable half of digits, deleted from
with `request apply` and `unlearn`, records its guarantee and where it holds; bad input is refused before any
compute with a message naming the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unlearnkit.heads import HeadModel, train_head
from unlearnkit.jobs.checkpoints import checkpoint_kind, load_checkpoint, save_checkpoint

FAST = ["--epochs", "1", "--model-arg", "width=8", "--model-arg", "hidden=32", "--device", "cpu"]


def _train(cli, out: Path, head: str, *extra: str) -> dict:
    r = cli("train", "--dataset", "digits", "--head", head, *extra, "--out", str(out))
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_ridge_head_through_the_ledger_is_exact_and_says_it_covers_the_whole_model(cli, tmp_path: Path) -> None:
    d = tmp_path / "ridge"
    summary = _train(cli, d, "ridge", "--backbone", "small_cnn", "--public-split", "0.5", *FAST)
    assert summary["guarantee"] == "exact" and summary["scope"] == "whole model"
    assert summary["public_split"]["public"] + summary["public_split"]["deletable"] == 1347
    assert json.loads((d / "head.json").read_text())["backbone"]["trained_on"] == "public"
    model = load_checkpoint(d / "model.safetensors")
    assert isinstance(model, HeadModel) and checkpoint_kind(d / "model.safetensors") == "head"
    public = int(torch.nonzero(~model.trained)[0])
    assert cli("request", "init", str(d), "--dataset", "digits").code == 0
    r = cli("request", "add", str(d), "--subject", "a", "--indices", str(public))
    assert r.code == 2 and "public" in r.err and "deletable" in r.err, r.err
    assert cli("request", "add", str(d), "--subject", "a", "--spec", "class:3").code == 0
    r = cli("request", "apply", str(d), "--method", "ft")
    assert r.code == 2 and "--method head" in r.err, r.err
    r = cli("request", "apply", str(d), "--no-audit", "--device", "cpu")
    assert r.code == 0 and "exact deletion" in r.out and "whole model" in r.out, r.out + r.err
    apps = json.loads(cli("request", "list", str(d), "--format", "json").out)["applications"]
    assert apps[0]["config"]["head"]["scope"] == "whole model"
    rec = apps[-1]["audit"]["head"]
    assert rec["guarantee"] == "exact" and rec["scope"] == "whole model" and rec["lam"] == 1.0
    assert cli("request", "verify", str(d)).code == 0
    # the head in the directory is the head trained from scratch without the deleted images
    after = load_checkpoint(d / "model.safetensors")
    assert isinstance(after, HeadModel)
    from unlearnkit.data import load_dataset

    scratch = train_head(
        model.backbone, load_dataset("digits").train, head="ridge", indices=after.remaining().tolist(), cache=False
    )
    assert int(after.deleted.sum()) == rec["deleted"] > 0
    assert (after.head.weight - scratch.head.weight).abs().max() <= 1e-5


def test_certified_head_unlearn_records_the_certificate_and_never_b(cli, tmp_path: Path, digits_untrained_ckpt) -> None:
    d = tmp_path / "cert"
    args = ["--backbone", str(digits_untrained_ckpt), "--backbone-data", "same", "--device", "cpu"]
    summary = _train(cli, d, "certified", *args, "--head-arg", "lam=0.05", "--head-arg", "sigma=20")
    assert summary["scope"] == "head only" and len(summary["b_commitment"]) == 64
    out = tmp_path / "out"
    r = cli("unlearn", str(d / "model.safetensors"), "--dataset", "digits", "--forget", "indices:" + _file(tmp_path))
    assert r.code == 2 and "--out" in r.err  # argparse: --out is required
    r = cli(
        "unlearn", str(d / "model.safetensors"), "--dataset", "digits", "--forget", "indices:" + _file(tmp_path),
        "--out", str(out), "--device", "cpu",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "certified deletion of 2 images" in r.out and "head only" in r.out and "ε spent" in r.out, r.out
    head = json.loads((out / "audit.json").read_text())["head"]
    cert = head["certificate"]
    for key in ("sigma", "eps", "delta", "c", "bound_request", "bound_accumulated", "budget_remaining", "retrained"):
        assert key in cert, key
    assert head["lam"] == 0.05 and cert["sigma"] == 20 and not cert["retrained"]
    assert 0 < cert["bound_request"] <= cert["bound_accumulated"] <= cert["budget"]
    assert cert["b_commitment"] == summary["b_commitment"]
    from safetensors import safe_open

    with safe_open(str(out / "unlearned.safetensors"), framework="pt") as fh:
        shapes = {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    assert not [k for k in shapes if k.split(".")[-1] in ("b", "noise")]
    dim = summary_dim(d)
    assert [k for k, s in shapes.items() if s == (10, dim)] == ["head.weight"]  # the one K × D tensor: w, not b


def summary_dim(d: Path) -> int:
    model = load_checkpoint(d / "model.safetensors")
    assert isinstance(model, HeadModel)
    return model.spec.dim


def _file(tmp: Path) -> str:
    p = tmp / "forget.json"
    p.write_text("[5, 9]")
    return str(p)


@pytest.mark.parametrize(
    ("extra", "expect"),
    [
        (["--head", "certified", "--backbone", "small_cnn", "--head-arg", "eps=0"], "eps must be a finite number > 0"),
        (["--head", "certified", "--backbone", "small_cnn", "--head-arg", "delta=2"], "delta must be in (0, 1)"),
        (["--head", "ridge", "--backbone", "small_cnn", "--head-arg", "sigma=1"], "no option sigma"),
        (["--head", "ridge", "--backbone", "small_cnn", "--public-split", "1.5"], "--public-split"),
        (["--head", "ridge", "--backbone", "nope"], "neither a model name"),
        (["--head", "ridge", "--model", "small_cnn", "--backbone", "small_cnn"], "pass the architecture as --backbone"),
        (["--head", "ridge"], "--head needs --backbone"),
        (["--model", "small_cnn", "--public-split", "0.5"], "need --head"),
    ],
)
def test_bad_head_training_input_is_refused_before_any_compute(cli, tmp_path: Path, extra, expect) -> None:
    out = tmp_path / "o"
    r = cli("train", "--dataset", "digits", *extra, "--out", str(out))
    assert r.code == 2 and expect in r.err, r.err
    assert not out.exists()


def test_a_backbone_file_needs_its_provenance(cli, tmp_path: Path, digits_untrained_ckpt) -> None:
    base = ["train", "--dataset", "digits", "--head", "ridge", "--backbone", str(digits_untrained_ckpt)]
    r = cli(*base, "--out", str(tmp_path / "o"))
    assert r.code == 2 and "--backbone-data public" in r.err, r.err
    from unlearnkit.models import DATASET_KEY, ROLE_KEY, load_model, save_model

    original = save_model(
        load_model(digits_untrained_ckpt),
        tmp_path / "orig.safetensors",
        extra={ROLE_KEY: "original", DATASET_KEY: "digits"},
    )
    r = cli(*base[:-1], str(original), "--backbone-data", "public", "--out", str(tmp_path / "o"))
    assert r.code == 2 and "--backbone-data same" in r.err, r.err


def test_head_method_on_a_plain_model_and_gradient_methods_on_a_head_model_are_refused(
    cli, tmp_path: Path, digits_untrained_ckpt
) -> None:
    base = ["--dataset", "digits", "--forget", "class:1", "--out", str(tmp_path / "o")]
    r = cli("unlearn", str(digits_untrained_ckpt), *base, "--method", "head")
    assert r.code == 2 and "head model" in r.err and "--head ridge|certified" in r.err, r.err
    r = cli("run", "--dataset", "digits", "--model", "small_cnn", *base, "--method", "head")
    assert r.code == 2 and "`run` trains plain networks" in r.err, r.err
    d = tmp_path / "h"
    _train(cli, d, "ridge", "--backbone", str(digits_untrained_ckpt), "--backbone-data", "same", "--device", "cpu")
    r = cli("unlearn", str(d / "model.safetensors"), *base, "--method", "salun")
    assert r.code == 2 and "--method head" in r.err, r.err
    assert not (tmp_path / "o").exists()


def test_any_torch_backbone_round_trips_with_its_factory(tmp_path: Path) -> None:
    from unlearnkit.errors import CheckpointError
    from unlearnkit.heads import load_head
    from unlearnkit.testing import tiny_bundle

    def factory() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 16), torch.nn.ReLU())

    torch.manual_seed(0)
    b = tiny_bundle()
    model = train_head(factory(), b.train, head="ridge", trained_on="public", cache=False)
    path = save_checkpoint(model, tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match="backbone=factory"):
        load_checkpoint(path)
    back = load_head(path, backbone=factory)
    x = torch.rand(4, 3, 8, 8)
    assert torch.equal(back(x), model(x)) and back.spec == model.spec
