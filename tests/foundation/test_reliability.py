"""Issue 11, one test (or more) per item of "What to build"; the bad-inputs sweep is test_bad_inputs.py."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from unlearnkit.cache import CacheWarning, dataset_digest
from unlearnkit.cli import main
from unlearnkit.data import load_dataset, split_for
from unlearnkit.data.datasets import bundle_digest
from unlearnkit.errors import CheckpointError, ConfigError, DivergenceError, IncompatibleError
from unlearnkit.models import ROLE_KEY, SPLIT_KEY, checkpoint_info, create_model, read_checkpoint, save_model
from unlearnkit.training import Recipe

TINY = Recipe(epochs=1, batch_size=32, lr=0.05)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ------------------------------------------------------------------------------------------- 1. verified cache
def test_item1_tampered_cache_entry_is_discarded_and_retrained(cache):
    from unlearnkit import oracle

    b = load_dataset("synthetic")
    first = oracle.train_or_load(b, "small_cnn", None, seed=0, recipe=TINY, device="cpu")
    weights = first.path / "model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-16:] = b"\x7f" * 16  # same size, other tensor bytes: only the stored SHA-256 can tell
    weights.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="do not match the stored SHA-256"):
        again = oracle.train_or_load(b, "small_cnn", None, seed=0, recipe=TINY, device="cpu")
    assert not again.from_cache
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        third = oracle.train_or_load(b, "small_cnn", None, seed=0, recipe=TINY, device="cpu")
    assert third.from_cache  # the entry was repaired


def test_item1_truncated_entry_and_broken_meta_are_recomputed(cache):
    from unlearnkit import oracle

    b = load_dataset("synthetic")
    t = oracle.train_or_load(b, "small_cnn", None, seed=1, recipe=TINY, device="cpu")
    (t.path / "meta.json").write_text("{not json")
    with pytest.warns(CacheWarning, match="meta.json"):
        assert not oracle.train_or_load(b, "small_cnn", None, seed=1, recipe=TINY, device="cpu").from_cache
    w = t.path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:300])
    with pytest.warns(CacheWarning, match="truncated"):
        assert not oracle.train_or_load(b, "small_cnn", None, seed=1, recipe=TINY, device="cpu").from_cache


def test_item1_key_holds_the_dataset_content_and_labels(tmp_path):
    from PIL import Image

    root = tmp_path / "imgs"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(4):
            arr = np.full((8, 8, 3), 40 * i + (0 if c == "a" else 20), dtype=np.uint8)
            Image.fromarray(arr).save(root / c / f"{i}.png")
    d1 = bundle_digest(load_dataset("image_folder", str(root), image_size=8))
    (root / "a" / "0.png").rename(tmp_path / "x.png")  # swap one image between the class folders
    (root / "b" / "0.png").rename(root / "a" / "0.png")
    (tmp_path / "x.png").rename(root / "b" / "0.png")
    d2 = bundle_digest(load_dataset("image_folder", str(root), image_size=8))
    assert d1 != d2
    ds = load_dataset("synthetic").train
    assert dataset_digest(ds) != dataset_digest(type(ds)(ds.images, ds.targets.roll(1)))


def test_item1_cache_verb_list_verify_clear_and_no_cache(cache, capsys):
    from unlearnkit import oracle

    b = load_dataset("synthetic")
    t = oracle.train_or_load(b, "small_cnn", None, seed=2, recipe=TINY, device="cpu")
    assert main(["cache", "list"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["cache", "verify"]) == 0
    w = t.path / "model.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-4:] = b"\x01\x02\x03\x04"
    w.write_bytes(bytes(raw))
    assert main(["cache", "verify"]) == 1 and "1 damaged" in capsys.readouterr().out
    assert not t.path.exists()
    oracle.train_or_load(b, "small_cnn", None, seed=2, recipe=TINY, device="cpu")
    assert not oracle.train_or_load(b, "small_cnn", None, seed=2, recipe=TINY, device="cpu", use_cache=False).from_cache
    assert main(["cache", "clear", "--yes"]) == 0 and not cache.exists()
    for verb in ("run", "tune", "demo", "bench", "train"):
        assert "--no-cache" in _help(verb, capsys)


def _help(verb: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    return capsys.readouterr().out


# ------------------------------------------------------------------------------------------- 2. checkpoints
def _digits():
    return load_dataset("digits")


def test_item2_original_checked_against_model_and_dataset(tmp_path):
    from unlearnkit.pipeline import load_original

    b = _digits()
    cases = {
        "vit": (create_model("vit_tiny", 10, 1, 8), "vit_tiny"),
        "size": (create_model("small_cnn", 10, 1, 28), "image_size"),
        "rgb": (create_model("small_cnn", 10, 3, 8), "in_channels"),
    }
    for name, (m, fragment) in cases.items():
        save_model(m, tmp_path / f"{name}.safetensors")
        with pytest.raises(CheckpointError, match=fragment):
            load_original(tmp_path / f"{name}.safetensors", "small_cnn", b, {})
    ok = create_model("small_cnn", 10, 1, 8)
    save_model(ok, tmp_path / "ok.safetensors")
    assert load_original(tmp_path / "ok.safetensors", "small_cnn", b, {}) is not None


def test_item2_retrained_refused_as_original_and_split_in_metadata(tmp_path):
    from unlearnkit.pipeline import load_original

    b = _digits()
    split = split_for(b, "class:0", 0)
    save_model(
        create_model("small_cnn", 10, 1, 8),
        tmp_path / "r.safetensors",
        extra={ROLE_KEY: "retrained", SPLIT_KEY: split.sha256},
    )
    with pytest.raises(IncompatibleError, match="retrained"):
        load_original(tmp_path / "r.safetensors", "small_cnn", b, {})
    assert checkpoint_info(tmp_path / "r.safetensors")["split_sha256"] == split.sha256


def test_item2_training_stores_role_and_split_in_the_checkpoint(cache, tmp_path):
    from unlearnkit import oracle

    b = load_dataset("synthetic")
    split = split_for(b, "class:1", 0)
    t = oracle.train_or_load(b, "small_cnn", split, seed=0, recipe=TINY, device="cpu")
    oracle.export(t, tmp_path / "out", split)
    info = checkpoint_info(tmp_path / "out" / "model.safetensors")
    assert info["role"] == "retrained" and info["split_sha256"] == split.sha256


def test_item2_eval_reads_the_split_from_the_checkpoint_not_a_side_file(tmp_path, capsys):
    b = _digits()
    other = split_for(b, "class:1", 0).sha256
    for role in ("unlearned", "retrained"):
        save_model(
            create_model("small_cnn", 10, 1, 8),
            tmp_path / f"{role}.safetensors",
            extra={ROLE_KEY: role, SPLIT_KEY: other},
        )
    code = main(
        [
            "eval",
            "--dataset",
            "digits",
            "--forget",
            "class:0",
            "--model",
            str(tmp_path / "unlearned.safetensors"),
            "--retrained",
            str(tmp_path / "retrained.safetensors"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2 and "stored in the checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_item2_metadata_validated_before_any_constructor(tmp_path):
    from unlearnkit.models import load_model, validate_model_config

    cfg = create_model("small_cnn", 10, 1, 8).unlearnkit_config  # type: ignore[attr-defined]
    with pytest.raises(CheckpointError, match="timm"):
        validate_model_config({**cfg, "name": "timm:resnet18"})
    validate_model_config({**cfg, "name": "timm:resnet18"}, allow_timm=True)
    with pytest.raises(ConfigError, match="width"):
        validate_model_config({**cfg, "kwargs": {"width": 10**9}})
    with pytest.raises(ConfigError, match="image_size"):
        validate_model_config({**cfg, "image_size": -4})
    from safetensors.torch import save_file

    m = create_model("small_cnn", 10, 1, 8)
    save_file(
        {k: v.contiguous() for k, v in m.state_dict().items()},
        str(tmp_path / "h.safetensors"),
        metadata={"unlearnkit_model": json.dumps({**cfg, "kwargs": {"width": 10**9}})},
    )
    with pytest.raises(ConfigError, match="width"):
        load_model(tmp_path / "h.safetensors")


def test_item2_pt_state_dict_usable_with_model(tmp_path):
    from unlearnkit.pipeline import load_original

    m = create_model("small_cnn", 10, 1, 8)
    torch.save(m.state_dict(), tmp_path / "sd.pt")
    net = load_original(tmp_path / "sd.pt", "small_cnn", _digits(), {})
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), net.state_dict().values(), strict=True))


# ------------------------------------------------------------------------------------------- 3. outputs
def test_item3_outputs_written_whole(tmp_path):
    from unlearnkit._io import write_dir_atomic

    out = tmp_path / "run"

    def crash(tmp):
        (tmp / "unlearned.safetensors").write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_dir_atomic(out, crash)
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing, not half a result
    write_dir_atomic(out, lambda t: [(t / n).write_text(n) for n in ("a", "record.json")], last="record.json")
    with pytest.raises(OSError, match="No space left"):
        write_dir_atomic(out, crash)
    assert sorted(p.name for p in out.iterdir()) == ["a", "record.json"]  # the previous state
    assert (out / "a").read_text() == "a"


def test_item3_output_and_cache_paths_checked_before_compute(tmp_path, monkeypatch, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    argv = ["train", "--dataset", "digits", "--model", "small_cnn", "--device", "cpu"]
    assert main([*argv, "--out", str(f)]) == 2 and "not a folder" in capsys.readouterr().err
    monkeypatch.setenv("UNLEARNKIT_CACHE", str(f))
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2 and "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------- 4. inputs
def test_item4_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    import unlearnkit.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.VERBS, "list", cli.Verb(cli.VERBS["list"].add, interrupted))
    assert cli.main(["list", "models"]) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_item4_list_never_cuts_names_and_has_script_formats(monkeypatch, capsys):
    from unlearnkit.methods import METHODS

    monkeypatch.setenv("COLUMNS", "80")
    assert main(["list", "methods"]) == 0
    table = capsys.readouterr().out
    for name in METHODS.names():
        assert name in table, name
    assert main(["list", "methods", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} >= set(METHODS.names())
    assert main(["list", "models", "--format", "plain"]) == 0
    assert all("\t" in ln for ln in capsys.readouterr().out.strip().splitlines())


def test_item4_data_checks(tmp_path):
    from unlearnkit.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError, match="does not exist"):
        load_dataset("fashion_mnist", str(tmp_path / "typo"))
    with pytest.raises(DataNotFoundError, match="not found in --data-dir"):
        load_dataset("fashion_mnist", str(tmp_path))
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x80")
    with pytest.raises(ConfigError, match="UTF-8"):
        split_for(_digits(), f"indices:{tmp_path / 'bin.txt'}", 0)
    with pytest.raises(ConfigError, match="folder"):
        split_for(_digits(), f"indices:{tmp_path}", 0)
    with pytest.raises(ConfigError, match="2\\^63"):
        split_for(_digits(), "class:0", -1)


# ------------------------------------------------------------------------------------------- 5. no silent no-op
def test_item5_bit_identical_run_is_flagged(cache):
    from unlearnkit.bench._testing import fake_methods_registered
    from unlearnkit.pipeline import run_experiment

    with fake_methods_registered():  # fake_any returns the model unchanged
        exp = run_experiment("synthetic", "small_cnn", "class:0", "fake_any", device="cpu", noise_floor=False)
    assert exp.record["unchanged_from_original"] is True
    assert any("bit-identical" in w for w in exp.record["warnings"])


def test_item5_tune_fails_when_every_trial_failed_and_dedupes(cache, monkeypatch):
    from unlearnkit import tune as tune_mod
    from unlearnkit.bench._testing import fake_methods_registered

    assert tune_mod.grid_configs({"lr": [0.1, 0.1, 0.2]}) == [{"lr": 0.1}, {"lr": 0.2}]

    def diverge(*a, **k):
        raise DivergenceError("loss became NaN at step 3")

    monkeypatch.setattr(tune_mod, "avg_gap", diverge)
    events: list[str] = []  # the library reports each failed trial as an event (the CLI prints it)
    with fake_methods_registered(), pytest.raises(DivergenceError, match="every one of the 2"):
        tune_mod.tune(
            "fake_any",
            "synthetic",
            "small_cnn",
            "class:0",
            {"lr": [0.1, 0.2, 0.1]},
            device="cpu",
            on_event=events.append,
        )
    assert sum("loss became NaN" in e for e in events) == 2


# ------------------------------------------------------------------------------------------- 6. security
def test_item6_hostile_pickle_refused_without_weights_only_advice(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": torch.zeros(1), "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "evil.pt")
    msg = str(info.value)
    assert "could run code" in msg and "safetensors" in msg and "weights_only" not in msg
