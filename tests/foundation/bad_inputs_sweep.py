"""A sweep of bad CLI inputs: each must exit non-zero with one clear line, no traceback and no file written.

Run it as a script (``python tests/foundation/bad_inputs_sweep.py [--subprocess]``) for the report, or through
``tests/foundation/test_bad_inputs.py`` (in-process, the same cases). Every case here fails before any training:
the checkpoints it needs are built untrained, with crafted metadata. A case that exits 0 is a *silent wrong
result*; one whose output holds ``Traceback`` is a *traceback*.

The engineer's path (issue 24: ``request``, ``unlearn``, ``train --shards``, ``tune``, audit flags) adds cases
against registered digits model directories. Each outcome is classified as a *clear error*, a *correct result*
(cases that must succeed, ``ok=True``, with a check of what they did), a *traceback*, a *silent wrong result*
(exit 0 where an error was due, or a failed check) or *data loss* (a file of a registered model directory, or a
row of its ledger, changed by a command that failed).

Failures of the operating system and the database (a read-only directory, a full disk at the model write and at the
ledger's commit, a missing driver, a refused connection, damaged ledgers and studies) are cases too
(``bad_inputs_faults.py``): the real command runs under an injected fault, and ``Case.exit`` pins the exit code
(2: refused before any compute; 1: failed after it, the previous state kept).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Case:
    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    expect: str = ""  # a fragment the error line must contain (case-insensitive)
    ok: bool = False  # a command that must succeed (a correct result), checked by `check`
    check: Callable[[], str | None] | None = None  # None when the result is right, else what is wrong
    guard: tuple[Path, ...] = ()  # model directories whose files a failing command must leave untouched
    ledgers: tuple[Path, ...] = ()  # model directories whose ledger rows a failing command must leave (and verify)
    fault: str = ""  # a failure of the OS or the database injected into the command (`bad_inputs_faults.inject`)
    exit: int = 0  # the exit code a failing command must give (0: any non-zero; 2 says "refused before compute")
    absent: str = ""  # a fragment the output must not hold (a password)


@dataclass
class Outcome:
    case: Case
    code: int
    out: str
    err: str
    new_files: list[str]
    changed: list[str] = field(default_factory=list)  # guarded files changed by a failing command
    wrong: str | None = None  # what `Case.check` found wrong

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.out or "Traceback" in self.err

    @property
    def silent(self) -> bool:
        return (self.code == 0) != self.case.ok or (self.code == 0 and self.wrong is not None)

    @property
    def data_loss(self) -> bool:
        return bool(self.changed)

    @property
    def verdict(self) -> str:
        if self.traceback:
            return "traceback"
        if self.data_loss:
            return "data loss"
        if self.silent:
            return "silent wrong"
        return "correct result" if self.case.ok else "clear error"

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]

    @property
    def problems(self) -> list[str]:
        leak = (
            [f"output holds {self.case.absent!r}"]
            if self.case.absent and self.case.absent in self.out + self.err
            else []
        )
        if self.case.ok:
            bad = [] if self.code == 0 else [f"exit {self.code}: {self.err.strip()[-200:]}"]
            return bad + ([self.wrong] if self.wrong else []) + (["traceback"] if self.traceback else []) + leak
        p = leak
        if self.case.exit and self.code not in (0, self.case.exit):
            p.append(f"exit {self.code}, not {self.case.exit}")
        if self.silent:
            p.append("exit code 0 (accepted silently)")
        if self.changed:
            p.append(f"changed {self.changed[:3]} (data loss)")
        if self.traceback:
            p.append("traceback")
        if len(self.lines) != 1:
            p.append(f"{len(self.lines)} lines on stderr")
        if self.case.expect and self.case.expect.lower() not in self.err.lower():
            p.append(f"message lacks {self.case.expect!r}")
        if self.new_files:
            p.append(f"wrote {self.new_files[:3]}")
        return p


# ------------------------------------------------------------------------------------------------ fixtures
def _save(model, path: Path, meta: dict[str, str] | None = None, cfg: dict | None = None) -> Path:
    from safetensors.torch import save_file

    from unlearnkit.models import META_KEY, model_config

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    md = dict(meta or {})
    md[META_KEY] = json.dumps(cfg if cfg is not None else model_config(model))
    save_file(state, str(path), metadata=md)
    return path


class _Evil:
    def __reduce__(self):
        return (print, ("this pickle ran code",))


def build_workspace(ws: Path) -> dict[str, Path]:
    """Files the cases point at: bad indices files, image folders, crafted checkpoints, a bad bench spec."""
    import numpy as np
    import torch
    from PIL import Image

    from unlearnkit.data import load_dataset, split_for
    from unlearnkit.models import DATASET_KEY, ROLE_KEY, SPLIT_KEY, create_model

    f: dict[str, Path] = {}
    ws.mkdir(parents=True, exist_ok=True)
    f["file"] = ws / "a_file.txt"
    f["file"].write_text("x")
    f["dir"] = ws / "a_dir"
    f["dir"].mkdir()
    f["empty_dir"] = ws / "empty_dir"
    f["empty_dir"].mkdir()
    (ws / "idx").mkdir()
    f["idx_binary"] = ws / "idx" / "binary.txt"
    f["idx_binary"].write_bytes(b"\xff\xfe\x00\x81\x82 garbage")
    f["idx_empty"] = ws / "idx" / "empty.txt"
    f["idx_empty"].write_text("")
    f["idx_words"] = ws / "idx" / "words.txt"
    f["idx_words"].write_text("a, b, c")
    f["idx_floats"] = ws / "idx" / "floats.json"
    f["idx_floats"].write_text("[1.5, 2.5]")
    f["idx_range"] = ws / "idx" / "range.txt"
    f["idx_range"].write_text("1\n2\n999999")
    f["idx_dup"] = ws / "idx" / "dup.txt"
    f["idx_dup"].write_text("1\n1\n2")
    f["idx_huge"] = ws / "idx" / "huge.txt"
    f["idx_huge"].write_text("123456789012345678901")
    f["idx_neg"] = ws / "idx" / "neg.txt"
    f["idx_neg"].write_text("-3\n4")
    f["idx_obj"] = ws / "idx" / "obj.json"
    f["idx_obj"].write_text('{"other": [1, 2]}')

    def img_folder(name: str, classes: dict[str, int]) -> Path:
        root = ws / name
        for c, n in classes.items():
            (root / c).mkdir(parents=True)
            for i in range(n):
                arr = (np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)
                Image.fromarray(arr).save(root / c / f"{i}.png")
        return root

    f["img_empty_class"] = img_folder("img_empty_class", {"a": 3, "b": 3, "c": 0})
    f["img_corrupt"] = img_folder("img_corrupt", {"a": 3, "b": 3})
    (f["img_corrupt"] / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    f["img_trunc"] = img_folder("img_trunc", {"a": 3, "b": 3})
    raw = (f["img_trunc"] / "a" / "0.png").read_bytes()
    (f["img_trunc"] / "a" / "0.png").write_bytes(raw[: len(raw) // 2])
    f["img_noclass"] = ws / "img_noclass"
    f["img_noclass"].mkdir()
    (f["img_noclass"] / "loose.png").write_bytes(raw)

    # checkpoints (untrained weights, crafted metadata), for digits: 10 classes, 1 channel, 8×8
    ck = ws / "ckpt"
    ck.mkdir()
    digits = load_dataset("digits")
    other_split = split_for(digits, "class:1", 0).sha256
    f["ck_retrained"] = _save(
        create_model("small_cnn", 10, 1, 8),
        ck / "retrained.safetensors",
        {ROLE_KEY: "retrained", SPLIT_KEY: other_split, DATASET_KEY: "digits"},
    )
    f["ck_original"] = _save(
        create_model("small_cnn", 10, 1, 8),
        ck / "original.safetensors",
        {ROLE_KEY: "original", SPLIT_KEY: split_for(digits, None, 0).sha256, DATASET_KEY: "digits"},
    )
    f["ck_foreign_original"] = _save(
        create_model("small_cnn", 10, 1, 8),
        ck / "foreign.safetensors",
        {ROLE_KEY: "original", SPLIT_KEY: "ab" * 32, DATASET_KEY: "digits"},
    )
    f["ck_vit"] = _save(create_model("vit_tiny", 10, 1, 8), ck / "vit.safetensors")
    f["ck_28"] = _save(create_model("small_cnn", 10, 1, 28), ck / "s28.safetensors")
    f["ck_rgb"] = _save(create_model("small_cnn", 10, 3, 8), ck / "rgb.safetensors")
    f["ck_5cls"] = _save(create_model("small_cnn", 5, 1, 8), ck / "five.safetensors")
    base = create_model("small_cnn", 10, 1, 8)
    cfg = dict(base.unlearnkit_config)  # type: ignore[attr-defined]
    f["ck_timm"] = _save(base, ck / "timm.safetensors", cfg={**cfg, "name": "timm:resnet18"})
    f["ck_huge"] = _save(base, ck / "huge.safetensors", cfg={**cfg, "kwargs": {"width": 10_000_000}})
    f["ck_badcfg"] = _save(base, ck / "badcfg.safetensors", cfg={**cfg, "num_classes": "ten"})
    f["ck_garbage"] = ck / "garbage.safetensors"
    f["ck_garbage"].write_bytes(b"\x00" * 64)
    good = ck / "original.safetensors"
    f["ck_trunc"] = ck / "trunc.safetensors"
    f["ck_trunc"].write_bytes(good.read_bytes()[:200])
    f["ck_pickle"] = ck / "evil.pt"
    torch.save({"weight": torch.zeros(2), "payload": _Evil()}, f["ck_pickle"])
    f["ck_pt_wrong"] = ck / "narrow.pt"
    torch.save(create_model("small_cnn", 10, 1, 8, width=8).state_dict(), f["ck_pt_wrong"])
    f["ck_pt_list"] = ck / "list.pt"
    torch.save([torch.zeros(2)], f["ck_pt_list"])
    f["ck_unlearned"] = _save(
        create_model("small_cnn", 10, 1, 8),
        ck / "unlearned.safetensors",
        {ROLE_KEY: "unlearned", SPLIT_KEY: other_split, DATASET_KEY: "digits"},
    )

    f["spec_runner"] = ws / "runner.toml"
    f["spec_runner"].write_text(
        'name = "x"\nrunner = "os:system"\n[grid]\ndatasets = ["digits"]\n'
        'models = ["small_cnn"]\nforget = ["class:0"]\nseeds = [0]\n'
        '[[methods]]\nname = "ft"\n'
    )
    f["spec_bad_toml"] = ws / "bad.toml"
    f["spec_bad_toml"].write_text("name = [unclosed\n")
    f["cache_file"] = ws / "cache_is_a_file"
    f["cache_file"].write_text("x")
    return f


# ------------------------------------------------------------------------------------------------ cases
def cases(f: dict[str, Path], out: Path) -> list[Case]:
    o = str(out / "o")
    T = ["train", "--dataset", "digits", "--model", "small_cnn", "--device", "cpu", "--no-progress"]
    R = [
        "run",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--forget",
        "class:0",
        "--method",
        "ft",
        "--device",
        "cpu",
        "--no-progress",
    ]
    E = ["eval", "--dataset", "digits", "--forget", "class:0", "--device", "cpu", "--no-progress"]
    TU = [
        "tune",
        "--dataset",
        "digits",
        "--model",
        "small_cnn",
        "--forget",
        "class:0",
        "--method",
        "ft",
        "--device",
        "cpu",
        "--no-progress",
    ]
    idx = lambda k: f"indices:{f[k]}"  # noqa: E731
    C = Case
    return [
        # train: names, seeds, forget specs, indices files
        C(
            "train unknown dataset",
            ["train", "--dataset", "digitz", "--model", "small_cnn", "--out", o],
            expect="digits",
        ),
        C("train unknown model", [*T[:4], "small_cnm", "--out", o], expect="small_cnn"),
        C("train negative seed", [*T, "--seed", "-1", "--out", o], expect="2^63"),
        C("train 20-digit seed", [*T, "--seed", "99999999999999999999", "--out", o], expect="2^63"),
        C("train seed not a number", [*T, "--seed", "abc", "--out", o]),
        C("train class out of range", [*T, "--forget", "class:99", "--out", o], expect="outside"),
        C("train random fraction > 1", [*T, "--forget", "random:1.5", "--out", o], expect="between 0 and 1"),
        C("train random fraction 0", [*T, "--forget", "random:0", "--out", o], expect="between 0 and 1"),
        C("train malformed spec", [*T, "--forget", "bogus", "--out", o], expect="forget spec"),
        C("train indices dir", [*T, "--forget", idx("dir"), "--out", o], expect="folder"),
        C(
            "train indices missing",
            [*T, "--forget", f"indices:{f['dir']}/nope.txt", "--out", o],
            expect="does not exist",
        ),
        C("train indices not utf-8", [*T, "--forget", idx("idx_binary"), "--out", o], expect="UTF-8"),
        C("train indices empty", [*T, "--forget", idx("idx_empty"), "--out", o], expect="empty"),
        C("train indices words", [*T, "--forget", idx("idx_words"), "--out", o], expect="indices file"),
        C("train indices floats", [*T, "--forget", idx("idx_floats"), "--out", o], expect="integers"),
        C("train indices out of range", [*T, "--forget", idx("idx_range"), "--out", o], expect="outside"),
        C("train indices duplicates", [*T, "--forget", idx("idx_dup"), "--out", o], expect="duplicate"),
        C("train indices 21 digits", [*T, "--forget", idx("idx_huge"), "--out", o], expect="too large"),
        C("train indices negative", [*T, "--forget", idx("idx_neg"), "--out", o], expect="outside"),
        C("train indices object without key", [*T, "--forget", idx("idx_obj"), "--out", o], expect="integers"),
        C("train indices no path", [*T, "--forget", "indices:", "--out", o], expect="needs a file"),
        # train: model args, recipe
        C("train width=abc", [*T, "--model-arg", "width=abc", "--out", o], expect="integer"),
        C("train width=0", [*T, "--model-arg", "width=0", "--out", o], expect="width"),
        C("train width huge", [*T, "--model-arg", "width=100000", "--out", o], expect="width"),
        C("train unknown model arg", [*T, "--model-arg", "nonsense=3", "--out", o], expect="nonsense"),
        C("train model arg without =", [*T, "--model-arg", "width", "--out", o], expect="key=value"),
        C("train recipe lr=abc", [*T, "--recipe", "lr=abc", "--out", o], expect="lr"),
        C("train recipe lr=nan", [*T, "--recipe", "lr=nan", "--out", o], expect="lr"),
        C("train recipe epochs=0", [*T, "--recipe", "epochs=0", "--out", o], expect="epochs"),
        C("train --epochs 0", [*T, "--epochs", "0", "--out", o], expect="epochs"),
        C("train recipe unknown key", [*T, "--recipe", "nope=1", "--out", o], expect="nope"),
        C("train recipe bad optimizer", [*T, "--recipe", "optimizer=rmsprop", "--out", o], expect="optimizer"),
        C("train recipe bool", [*T, "--recipe", "augment=maybe", "--out", o], expect="true or false"),
        # train: outputs, cache, data
        C("train --out is a file", [*T, "--out", str(f["file"])], expect="not a folder"),
        C("train --out under a file", [*T, "--out", str(f["file"] / "sub")], expect="is a file"),
        C(
            "train cache is a file",
            [*T, "--out", o],
            env={"UNLEARNKIT_CACHE": str(f["cache_file"])},
            expect="not a directory",
        ),
        C("train data-dir missing", [*T, "--data-dir", str(out / "nope"), "--out", o], expect="does not exist"),
        C("train data-dir is a file", [*T, "--data-dir", str(f["file"]), "--out", o], expect="not a folder"),
        C(
            "train fashion data-dir mistyped",
            [
                "train",
                "--dataset",
                "fashion_mnist",
                "--model",
                "small_cnn",
                "--data-dir",
                str(out / "fashoin"),
                "--out",
                o,
            ],
            expect="does not exist",
        ),
        C(
            "train fashion data-dir without files",
            [
                "train",
                "--dataset",
                "fashion_mnist",
                "--model",
                "small_cnn",
                "--data-dir",
                str(f["empty_dir"]),
                "--out",
                o,
            ],
            expect="not found",
        ),
        C(
            "train image_folder without data-dir",
            ["train", "--dataset", "image_folder", "--model", "small_cnn", "--out", o],
            expect="--data-dir",
        ),
        C(
            "train image_folder empty class",
            [
                "train",
                "--dataset",
                "image_folder",
                "--model",
                "small_cnn",
                "--data-dir",
                str(f["img_empty_class"]),
                "--out",
                o,
            ],
            expect="holds no image",
        ),
        C(
            "train image_folder corrupt png",
            [
                "train",
                "--dataset",
                "image_folder",
                "--model",
                "small_cnn",
                "--data-dir",
                str(f["img_corrupt"]),
                "--out",
                o,
            ],
            expect="bad.png",
        ),
        C(
            "train image_folder truncated png",
            [
                "train",
                "--dataset",
                "image_folder",
                "--model",
                "small_cnn",
                "--data-dir",
                str(f["img_trunc"]),
                "--out",
                o,
            ],
            expect="0.png",
        ),
        C(
            "train image_folder no classes",
            [
                "train",
                "--dataset",
                "image_folder",
                "--model",
                "small_cnn",
                "--data-dir",
                str(f["img_noclass"]),
                "--out",
                o,
            ],
            expect="sub-folders",
        ),
        C("train bad device", [*T[:-3], "--device", "tpu", "--out", o], expect="device"),
        # run: method, metrics, options, checkpoints
        C("run unknown method", [*R[:8], "nope", *R[9:], "--out", o], expect="method"),
        C("run unknown metric", [*R, "--metrics", "acuracy_forget", "--out", o], expect="acuracy_forget"),
        C("run bad --set value", [*R, "--set", "lr=abc", "--out", o], expect="lr"),
        C("run unknown --set key", [*R, "--set", "nokey=1", "--out", o], expect="nokey"),
        C("run unknown preset", [*R, "--preset", "nope", "--out", o], expect="preset"),
        C("run negative seed", [*R, "--seed", "-5", "--out", o], expect="2^63"),
        C("run --out is a file", [*R, "--out", str(f["file"])], expect="not a folder"),
        C(
            "run cache is a file",
            [*R, "--out", o],
            env={"UNLEARNKIT_CACHE": str(f["cache_file"])},
            expect="not a directory",
        ),
        C("run width=abc", [*R, "--model-arg", "width=abc", "--out", o], expect="integer"),
        C(
            "run --original missing",
            [*R, "--original", str(out / "nope.safetensors"), "--out", o],
            expect="does not exist",
        ),
        C("run --original folder", [*R, "--original", str(f["dir"]), "--out", o], expect="folder"),
        C("run --original garbage", [*R, "--original", str(f["ck_garbage"]), "--out", o], expect="corrupt"),
        C("run --original truncated", [*R, "--original", str(f["ck_trunc"]), "--out", o], expect="corrupt"),
        C("run --original hostile pickle", [*R, "--original", str(f["ck_pickle"]), "--out", o], expect="run code"),
        C("run --original .pt list", [*R, "--original", str(f["ck_pt_list"]), "--out", o], expect="state dict"),
        C("run --original retrained", [*R, "--original", str(f["ck_retrained"]), "--out", o], expect="retrained"),
        C(
            "run --original other training set",
            [*R, "--original", str(f["ck_foreign_original"]), "--out", o],
            expect="another training set",
        ),
        C("run --original vit for small_cnn", [*R, "--original", str(f["ck_vit"]), "--out", o], expect="vit_tiny"),
        C("run --original 28x28 on digits", [*R, "--original", str(f["ck_28"]), "--out", o], expect="image_size"),
        C("run --original 3 channels", [*R, "--original", str(f["ck_rgb"]), "--out", o], expect="in_channels"),
        C("run --original 5 classes", [*R, "--original", str(f["ck_5cls"]), "--out", o], expect="num_classes"),
        C("run --original timm name", [*R, "--original", str(f["ck_timm"]), "--out", o], expect="timm"),
        C("run --original huge width", [*R, "--original", str(f["ck_huge"]), "--out", o], expect="width"),
        C("run --original bad config", [*R, "--original", str(f["ck_badcfg"]), "--out", o], expect="num_classes"),
        C("run --original .pt other width", [*R, "--original", str(f["ck_pt_wrong"]), "--out", o], expect="shape"),
        # eval
        C(
            "eval --model missing",
            [*E, "--model", str(out / "nope.safetensors"), "--retrained", str(f["ck_retrained"]), "--out", o],
            expect="does not exist",
        ),
        C(
            "eval retrained of another split",
            [
                *E,
                "--forget",
                "class:2",
                "--model",
                str(f["ck_unlearned"]),
                "--retrained",
                str(f["ck_retrained"]),
                "--out",
                o,
            ],
            expect="split",
        ),
        C(
            "eval model of another split",
            [*E, "--forget", "class:2", "--model", str(f["ck_unlearned"]), "--retrained", str(f["ck_vit"]), "--out", o],
            expect="split",
        ),
        C(
            "eval --original retrained",
            [
                *E,
                "--model",
                str(f["ck_unlearned"]),
                "--retrained",
                str(f["ck_retrained"]),
                "--original",
                str(f["ck_retrained"]),
                "--out",
                o,
            ],
            expect="retrained",
        ),
        C(
            "eval --retrained is an original",
            [*E, "--model", str(f["ck_unlearned"]), "--retrained", str(f["ck_original"]), "--out", o],
            expect="original",
        ),
        C(
            "eval --out is a file",
            [*E, "--model", str(f["ck_unlearned"]), "--retrained", str(f["ck_retrained"]), "--out", str(f["file"])],
            expect="not a folder",
        ),
        C(
            "eval --model folder",
            [*E, "--model", str(f["dir"]), "--retrained", str(f["ck_retrained"]), "--out", o],
            expect="folder",
        ),
        # tune
        C("tune negative seeds", [*TU, "--grid", "lr=0.1", "--seeds", "-1"], expect="2^63"),
        C("tune seeds not numbers", [*TU, "--grid", "lr=0.1", "--seeds", "1,a"], expect="integers"),
        C("tune empty grid", [*TU, "--grid", "lr="], expect="grid"),
        C("tune unknown grid key", [*TU, "--grid", "nokey=1,2"], expect="nokey"),
        C("tune --out is a folder", [*TU, "--grid", "lr=0.1", "--out", str(f["dir"])], expect="folder"),
        C("tune bad validation seed", [*TU, "--grid", "lr=0.1", "--validation-seed", "-3"], expect="2^63"),
        # bench, report, fetch, demo, list, cache
        C("bench missing spec", ["bench", str(out / "nope.toml"), "--out", o], expect="nope.toml"),
        C("bench bad toml", ["bench", str(f["spec_bad_toml"]), "--out", o], expect="bad.toml"),
        C("bench runner module:function", ["bench", str(f["spec_runner"]), "--out", o], expect="runner"),
        C("bench --out is a file", ["bench", str(f["spec_runner"]), "--out", str(f["file"])], expect="not a folder"),
        C("report missing dir", ["report", str(out / "nope")], expect="nope"),
        C("report --out is a file", ["report", str(f["dir"]), "--out", str(f["file"])], expect="not a folder"),
        C("fetch into a file", ["fetch", "fashion_mnist", "--data-dir", str(f["file"])], expect="not a folder"),
        C("demo unknown method", ["demo", "--methods", "nope", "--out", o, "--device", "cpu"], expect="nope"),
        C("demo --out is a file", ["demo", "--out", str(f["file"])], expect="not a folder"),
        C("list unknown kind", ["list", "mehtods"], expect="choice"),
        C("cache unknown action", ["cache", "purge"], expect="choice"),
        C("cache clear without --yes", ["cache", "clear"], env={"UNLEARNKIT_CACHE": str(f["dir"])}, expect="--yes"),
        C(
            "cache list cache is a file",
            ["cache", "list"],
            env={"UNLEARNKIT_CACHE": str(f["cache_file"])},
            expect="not a directory",
        ),
        C("no verb option", ["--frobnicate"], expect="unrecognized"),
    ]


# ------------------------------------------------------------------------------------------------ running
def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _contents(dirs: tuple[Path, ...]) -> dict[str, str]:
    import hashlib

    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for d in dirs
        for p in sorted(d.rglob("*"))
        if p.is_file() and p.name != ".apply.lock"
    }


def _rows(dirs: tuple[Path, ...]) -> dict[str, object]:
    """Each ledger's requests (id, status, indices), applications (method, model after) and whether it verifies."""
    if not dirs:
        return {}
    from unlearnkit.ledger import ModelDirectory

    state: dict[str, object] = {}
    for d in dirs:
        md = ModelDirectory(d)
        reqs = [(r.id, r.status, r.indices) for r in md.ledger.requests_list()]
        apps = [(a.seq, a.method, a.model_after) for a in md.ledger.applications_list()]
        state[d.name] = (reqs, apps, md.verify().ok)
        md.ledger.engine.dispose()
    return state


def _finish(
    case: Case, code: int, out: str, err: str, new: list[str], guarded: dict[str, str], rows: dict[str, object]
) -> Outcome:
    after = _contents(case.guard)
    changed = [] if case.ok else sorted(k for k in guarded.keys() | after.keys() if guarded.get(k) != after.get(k))
    if not case.ok:
        rows_after = _rows(case.ledgers)
        changed += [f"{d}/ledger rows" for d in rows if rows[d] != rows_after.get(d)]
    wrong = case.check() if case.check is not None and code == 0 else None
    return Outcome(case, code, out, err, new, [Path(c).name if "/" in c else c for c in changed], wrong)


def run_in_process(case: Case, root: Path) -> Outcome:
    from unlearnkit.cli import main

    inject = _sibling("bad_inputs_faults").inject
    guarded, rows = _contents(case.guard), _rows(case.ledgers)
    before = _snapshot(root)
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in case.env}
    os.environ.update(case.env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                with inject(case.fault):
                    code = main(case.argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return _finish(case, int(code), out.getvalue(), err.getvalue(), sorted(_snapshot(root) - before), guarded, rows)


def run_subprocess(case: Case, root: Path, timeout: float = 120) -> Outcome:
    guarded, rows = _contents(case.guard), _rows(case.ledgers)
    before = _snapshot(root)
    env = {**os.environ, "UNLEARNKIT_PROGRESS": "0", **case.env}
    child = _sibling("bad_inputs_faults")
    cmd = [sys.executable, "-c", child.CHILD, child.__file__, case.fault, *case.argv]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        code, out, err = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        code, out, err = 0, "", "timed out: the command started computing"
    return _finish(case, code, out, err, sorted(_snapshot(root) - before), guarded, rows)


def _sibling(name: str):
    """A module beside this file (the sweep runs as a script and as a file loaded by the test)."""
    import importlib.util

    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[name] = mod
        spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return sys.modules[name]


def sweep(root: Path, runner: Callable[[Case, Path], Outcome] = run_in_process, match: str = "") -> list[Outcome]:
    files = build_workspace(root / "ws")
    out = root / "out"
    out.mkdir()
    cache = root / "cache"
    saved = os.environ.get("UNLEARNKIT_CACHE")
    os.environ["UNLEARNKIT_CACHE"] = str(cache)
    try:
        all_cases = cases(files, out)
        try:
            import sqlalchemy  # noqa: F401  (the ledger's optional extra)
        except ImportError:
            pass
        else:
            eng = _sibling("bad_inputs_engineer")
            all_cases += eng.engineer_cases(eng.build_engineer_workspace(root / "ws_eng"), out, Case)
            osf = _sibling("bad_inputs_faults")  # the OS's and the database's failures, injected
            all_cases += osf.os_cases(osf.build_os_workspace(root / "ws_os"), out, Case)
        return [runner(c, root) for c in all_cases if match.lower() in c.name.lower()]
    finally:
        if saved is None:
            os.environ.pop("UNLEARNKIT_CACHE", None)
        else:
            os.environ["UNLEARNKIT_CACHE"] = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subprocess", action="store_true", help="run each case as `python -c main(...)`")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case's error line")
    ap.add_argument("-k", "--match", default="", help="run only the cases whose name holds this text")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        outcomes = sweep(Path(tmp), run_subprocess if a.subprocess else run_in_process, a.match)
    bad = [o for o in outcomes if o.problems]
    from collections import Counter

    verdicts = Counter(o.verdict for o in outcomes)
    for o in outcomes:
        if a.verbose or o.problems:
            mark = "FAIL" if o.problems else "ok  "
            first = o.lines[-1] if o.lines else "(no stderr)"
            print(f"{mark} {o.case.name}: exit {o.code}: {first[:160]}" + (f"  <- {o.problems}" if o.problems else ""))
    print(
        f"{len(outcomes)} cases: "
        + ", ".join(f"{verdicts[k]} {k}" for k in ("clear error", "correct result", "traceback", "silent wrong"))
        + f", {verdicts['data loss']} data loss; {len(bad)} with any problem"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
