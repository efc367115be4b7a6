"""Cases of the bad-inputs sweep for the engineer's path (issue 24): ``request``, ``unlearn``, ``train --shards``,
``tune``, audit flags, on digits. Loaded by ``bad_inputs_sweep.py``; nothing here trains a model (the model
directories hold untrained digits networks and an untrained SISA ensemble, registered as a user would)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

DIGITS_TRAIN = 1347  # training images of scikit-learn's digits (the fixed 75/25 split)


def _dir(ws: Path, name: str, model: Any, *, register: bool = True) -> Path:
    from unlearnkit.jobs.checkpoints import save_checkpoint
    from unlearnkit.ledger import ModelDirectory

    d = ws / name
    d.mkdir(parents=True)
    save_checkpoint(model, d / "model.safetensors")
    if register:
        ModelDirectory.create(d, dataset="digits")
    (d / ".apply.lock").touch()
    return d


def _sisa_untrained() -> Any:
    from unlearnkit import sisa
    from unlearnkit.models import create_model, model_config
    from unlearnkit.training import default_recipe

    member = create_model("small_cnn", 10, 1, 8)
    spec = sisa.SISASpec(
        2, 1, default_recipe("digits", "small_cnn").to_dict(), 0, "vote", model_config(member), "digits", None, None, 10
    )
    shard, slc = sisa.partition(DIGITS_TRAIN, 2, 1, 0)
    return sisa.SISAEnsemble([create_model("small_cnn", 10, 1, 8) for _ in range(2)], shard, slc, spec)


def build_engineer_workspace(ws: Path) -> dict[str, Path]:
    """Registered digits model directories (plain, SISA, copied without its anchor, broken ledgers), foreign and
    broken checkpoints, bad index files, a damaged and a foreign Optuna study."""
    import torch

    from unlearnkit.models import DATASET_KEY, create_model, save_model

    torch.manual_seed(0)
    ws.mkdir(parents=True)
    f: dict[str, Path] = {}
    digits = lambda: create_model("small_cnn", 10, 1, 8)  # noqa: E731
    f["md"] = _dir(ws, "md", digits())  # the directory every refused request is aimed at (guarded)
    f["md_ok"] = _dir(ws, "md_ok", digits())  # requests that must succeed
    f["md_sisa"] = _dir(ws, "md_sisa", _sisa_untrained())
    f["md_nohead"] = _dir(ws, "md_nohead", digits())
    (f["md_nohead"] / "ledger.head").unlink()
    f["md_adopt"] = _dir(ws, "md_adopt", digits())
    (f["md_adopt"] / "ledger.head").unlink()
    f["md_textdb"] = _dir(ws, "md_textdb", digits(), register=False)
    (f["md_textdb"] / "ledger.db").write_text("this is not a database\n")
    f["md_emptydb"] = _dir(ws, "md_emptydb", digits(), register=False)
    (f["md_emptydb"] / "ledger.db").write_bytes(b"")
    f["md_unreg"] = _dir(ws, "md_unreg", digits(), register=False)
    f["md_textmodel"] = ws / "md_textmodel"
    f["md_textmodel"].mkdir()
    (f["md_textmodel"] / "model.safetensors").write_text("not a model")
    f["md_fashion"] = ws / "md_fashion"
    f["md_fashion"].mkdir()
    fashion = create_model("small_cnn", 10, 1, 28)
    save_model(fashion, f["md_fashion"] / "model.safetensors", extra={DATASET_KEY: "fashion_mnist"})
    f["ck_fashion"] = save_model(fashion, ws / "fashion.safetensors", extra={DATASET_KEY: "fashion_mnist"})
    f["ck_digits"] = save_model(digits(), ws / "digits.safetensors")
    f["ck_sisa"] = f["md_sisa"] / "model.safetensors"
    f["ck_pt"] = ws / "state.pt"
    torch.save(create_model("vit_tiny", 10, 1, 8).state_dict(), f["ck_pt"])
    f["ck_text"] = ws / "text.safetensors"
    f["ck_text"].write_text("hello")
    f["key_inside"] = f["md"] / "key.txt"
    for name, text in {
        "floats.json": "[3.5, 7.9]",
        "bools.json": "[true, false]",
        "broken.json": "[1, 2",
        "ok.txt": "5\n9\n",
    }.items():
        f[name] = ws / name
        f[name].write_text(text)
    f["binary.txt"] = ws / "binary.txt"
    f["binary.txt"].write_bytes(b"\xff\xfe\x00\x81\x82 garbage")
    f["study_bad"] = ws / "study_bad.db"
    f["study_bad"].write_text("garbage, not sqlite")
    f["study_ft"] = ws / "study_ft.db"
    try:
        import optuna
    except ImportError:
        pass
    else:
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        st = optuna.create_study(study_name="mine", storage=f"sqlite:///{f['study_ft']}")
        st.set_user_attr(
            "unlearnkit_identity", {"method": "ft", "dataset": "digits", "model": "small_cnn", "forget": "class:2"}
        )
    return f


def _listed(d: Path) -> list[dict[str, Any]]:
    from unlearnkit.ledger import ModelDirectory

    return [{"id": r.id, "indices": r.indices, "status": r.status} for r in ModelDirectory(d).ledger.requests_list()]


def engineer_cases(f: dict[str, Path], out: Path, Case: Any) -> list[Any]:
    o = str(out / "eng")
    md, ok, sisa = str(f["md"]), str(f["md_ok"]), str(f["md_sisa"])
    g = (f["md"], f["md_sisa"], f["md_nohead"])  # every failing command leaves these byte-identical
    A = ["request", "add", md, "--subject", "s"]
    P = ["request", "apply", md, "--no-audit"]
    U = ["unlearn", str(f["ck_digits"]), "--dataset", "digits", "--forget", "class:0", "--method", "ft"]
    T = ["train", "--dataset", "digits", "--model", "small_cnn", "--no-progress"]
    R = ["run", "--dataset", "digits", "--model", "small_cnn", "--forget", "class:0", "--method", "ft"]
    TU = ["tune", "--dataset", "digits", "--model", "small_cnn", "--forget", "class:2", "--grid", "lr=0.1"]

    def C(name: str, argv: list[str], expect: str = "", **kw: Any) -> Any:
        kw.setdefault("guard", g)
        return Case(name, argv, expect=expect, **kw)

    def added_exactly(d: Path, rid: str, want: list[int]):
        def check() -> str | None:
            got = [r["indices"] for r in _listed(d) if r["id"] == rid]
            return None if got == [want] else f"request {rid} holds {got}, not {want}"

        return check

    def verifies(d: Path):
        def check() -> str | None:
            from unlearnkit.ledger import ModelDirectory

            v = ModelDirectory(d).verify()
            return None if v.ok else f"verify fails: {v.problems}"

        return check

    return [
        # request add: the index grammar (wrong images deleted, tracebacks)
        C("add JSON floats", [*A, "--indices", f"@{f['floats.json']}"], "integers"),
        C("add JSON booleans", [*A, "--indices", f"@{f['bools.json']}"], "integers"),
        C("add malformed JSON", [*A, "--indices", f"@{f['broken.json']}"], "cannot parse"),
        C("add binary @FILE", [*A, "--indices", f"@{f['binary.txt']}"], "UTF-8"),
        C("add missing @FILE", [*A, "--indices", f"@{out}/nope.txt"], "does not exist"),
        C("add @ without a file", [*A, "--indices", "@"], "file name"),
        C("add reversed range among others", [*A, "--indices", "3,40-30"], "backwards"),
        C("add huge range", [*A, "--indices", "0-99999999999"], "outside"),
        C("add range past the training set", [*A, "--indices", f"1300-{DIGITS_TRAIN + 5}"], "range"),
        C("add index past the training set", [*A, "--indices", "99999"], "range"),
        C("add negative index", [*A, "--indices", "-3"], "range"),
        C("add words", [*A, "--indices", "3,x"], "integers"),
        C("add half a range", [*A, "--indices", "3-"], "integers"),
        C("add --indices and --spec", [*A, "--indices", "3", "--spec", "class:3"], "one of them"),
        C("add neither --indices nor --spec", A, "one of them"),
        C("add --spec random", [*A, "--spec", "random:0.1"], "class:"),
        C("add --spec class out of range", [*A, "--spec", "class:99"], "class"),
        # request add: subjects and ids (forged lines in `request list`)
        C("add empty subject", ["request", "add", md, "--subject", "", "--indices", "3"], "empty"),
        C("add blank subject", ["request", "add", md, "--subject", "   ", "--indices", "3"], "empty"),
        C(
            "add newline in subject",
            ["request", "add", md, "--subject", "a\nreq-9 applied", "--indices", "3"],
            "control",
        ),
        C("add non-UTF-8 subject", ["request", "add", md, "--subject", "caf\udce9", "--indices", "3"], "UTF-8"),
        C("add newline in id", [*A, "--indices", "3", "--id", "x\ny"], "control"),
        C("add empty id", [*A, "--indices", "3", "--id", ""], "empty"),
        # model directories and ledgers (every ledger failure was a traceback)
        C("add dir missing", ["request", "add", f"{out}/nodir", "--subject", "s", "--indices", "3"], "does not exist"),
        C("add dir is a file", ["request", "add", str(f["ck_text"]), "--subject", "s", "--indices", "3"], "file"),
        C("add unregistered dir", ["request", "add", str(f["md_unreg"]), "--subject", "s", "--indices", "3"], "ledger"),
        C(
            "add ledger.db is text",
            ["request", "add", str(f["md_textdb"]), "--subject", "s", "--indices", "3"],
            "SQLite",
        ),
        C(
            "add ledger.db empty",
            ["request", "add", str(f["md_emptydb"]), "--subject", "s", "--indices", "3"],
            "ledger",
        ),
        C(
            "add without ledger.head",
            ["request", "add", str(f["md_nohead"]), "--subject", "s", "--indices", "3"],
            "--adopt",
        ),
        C("add mistyped --db", [*A, "--indices", "3", "--db", f"sqlite:///{out}/ledgr.db"], "does not exist"),
        C("add in-memory --db", [*A, "--indices", "3", "--db", "sqlite://"], "in-memory"),
        C("add --db not a URL", [*A, "--indices", "3", "--db", "ledger"], "URL"),
        C("add --db unknown dialect", [*A, "--indices", "3", "--db", "nosuchdb://x/y"], "URL"),
        C(
            "add --db missing driver",
            [*A, "--indices", "3", "--db", "postgresql://u@127.0.0.1:1/x"],
            "psycopg[binary]",
            fault="no_module:psycopg",  # SQLAlchemy 2.1's default postgresql driver, absent whatever is installed
        ),
        C("list dir missing", ["request", "list", f"{out}/nodir"], "does not exist"),
        C("verify dir missing", ["request", "verify", f"{out}/nodir"], "does not exist"),
        C("verify mistyped --db", ["request", "verify", md, "--db", f"sqlite:///{out}/x.db"], "does not exist"),
        # request init (a text file or another dataset's model registered; the directory was then unusable)
        C("init a text file", ["request", "init", str(f["md_textmodel"]), "--dataset", "digits"], "corrupt"),
        C(
            "init a Fashion-MNIST model as digits",
            ["request", "init", str(f["md_fashion"]), "--dataset", "digits"],
            "fashion",
        ),
        C("init twice", ["request", "init", md, "--dataset", "digits"], "already"),
        C("init without --dataset", ["request", "init", str(f["md_unreg"])], "--dataset"),
        C("init a folder without model", ["request", "init", o, "--dataset", "digits"], "holds no"),
        C("init unknown dataset", ["request", "init", str(f["md_unreg"]), "--dataset", "digitz"], "digits"),
        C("init --adopt with a head", ["request", "init", md, "--adopt"], "nothing to adopt"),
        C(
            "init --adopt and --dataset",
            ["request", "init", str(f["md_nohead"]), "--adopt", "--dataset", "digits"],
            "--dataset",
        ),
        # request apply (exit 0 with an unknown method; tracebacks after compute; SISA + gradient method)
        C("apply unknown method, nothing pending", [*P, "--method", "nosuch"], "nosuch"),
        C("apply unknown --set key", [*P, "--method", "ft", "--set", "nokey=1"], "nokey"),
        C("apply bad --set value", [*P, "--method", "ft", "--set", "lr=abc"], "lr"),
        C("apply negative seed", [*P, "--method", "ft", "--seed", "-1"], "2^63"),
        C("apply bad device", [*P, "--method", "ft", "--device", "tpu"], "device"),
        C("apply gradient method on SISA", ["request", "apply", sisa, "--method", "ft"], "--method sisa"),
        C("apply --set on SISA", ["request", "apply", sisa, "--set", "epochs=3"], "no effect"),
        C("apply without ledger.head", ["request", "apply", str(f["md_nohead"]), "--method", "ft"], "--adopt"),
        # request verify: integrity (key, external anchor)
        C("verify --expect not hex", ["request", "verify", md, "--expect", "zzz"], "hex"),
        C("verify --expect unknown row", ["request", "verify", md, "--expect", "0" * 16], "no row"),
        C(
            "verify key on an unkeyed ledger",
            ["request", "verify", md],
            "not keyed",
            env={"UNLEARNKIT_LEDGER_KEY": "k"},
        ),
        C(
            "verify key file inside the dir",
            ["request", "verify", md],
            "inside the model directory",
            env={"UNLEARNKIT_LEDGER_KEY_FILE": str(f["key_inside"])},
        ),
        C(
            "verify missing key file",
            ["request", "verify", md],
            "key file",
            env={"UNLEARNKIT_LEDGER_KEY_FILE": f"{out}/k"},
        ),
        C("verify without ledger.head", ["request", "verify", str(f["md_nohead"])], "--adopt"),
        # unlearn (another dataset's or architecture's checkpoint; SISA + gradient method)
        C("unlearn a Fashion-MNIST model as digits", ["unlearn", str(f["ck_fashion"]), *U[2:], "--out", o], "fashion"),
        C("unlearn a text file", ["unlearn", str(f["ck_text"]), *U[2:], "--out", o], "corrupt"),
        C("unlearn a bare .pt state dict", ["unlearn", str(f["ck_pt"]), *U[2:], "--out", o], "model config"),
        C("unlearn a folder", ["unlearn", str(f["md"]), *U[2:], "--out", o], "folder"),
        C("unlearn gradient method on SISA", ["unlearn", str(f["ck_sisa"]), *U[2:], "--out", o], "--method sisa"),
        C("unlearn --out a model directory", [*U, "--out", md], "registered model directory"),
        C("unlearn JSON floats", [*U[:5], f"indices:{f['floats.json']}", *U[6:], "--out", o], "integers"),
        C("unlearn unknown method", [*U[:7], "nosuch", "--out", o], "nosuch"),
        C("unlearn negative seed", [*U, "--seed", "-1", "--out", o], "2^63"),
        C("unlearn bad device", [*U, "--device", "tpu", "--out", o], "device"),
        # train (data loss: overwriting a registered model; SISA stages with 0 epochs)
        C("train --out a model directory", [*T, "--out", md], "registered model directory"),
        C("train --shards --out a model directory", [*T, "--shards", "2", "--out", sisa], "registered model directory"),
        C(
            "train SISA stages with 0 epochs",
            [*T, "--shards", "1", "--slices", "10", "--epochs", "1", "--out", o],
            "0 epochs",
        ),
        C("train --shards 0", [*T, "--shards", "0", "--out", o], "≥ 1"),
        C(
            "train more slices than images",
            [*T, "--shards", "100", "--slices", "100", "--epochs", "60", "--out", o],
            "cannot fill",
        ),
        C("run --out a model directory", [*R, "--out", md], "registered model directory"),
        # audit flags: costs gated, nothing ignored
        C("run --oracles 0", [*R, "--oracles", "0", "--out", o], "≥ 3"),
        C("run --oracles 2", [*R, "--oracles", "2", "--out", o], "≥ 3"),
        C("run --oracles 100000 without --yes", [*R, "--oracles", "100000", "--out", o], "--yes"),
        C("run --oracles not a number", [*R, "--oracles", "many", "--out", o], "integer"),
        # tune (a damaged study; another method's study resumed)
        C(
            "tune damaged study storage",
            [*TU, "--method", "ft", "--storage", f"sqlite:///{f['study_bad']}"],
            "study storage",
        ),
        C(
            "tune resumes another method's study",
            [*TU, "--method", "salun", "--storage", f"sqlite:///{f['study_ft']}", "--study-name", "mine"],
            "made for",
        ),
        # correct results: what must work does, exactly
        C(
            "add a list with a range",
            ["request", "add", ok, "--subject", "alice", "--indices", "3,40-42", "--id", "a-1"],
            ok=True,
            check=added_exactly(f["md_ok"], "a-1", [3, 40, 41, 42]),
        ),
        C(
            "add an @FILE",
            ["request", "add", ok, "--subject", "bob", "--indices", f"@{f['ok.txt']}", "--id", "b-1"],
            ok=True,
            check=added_exactly(f["md_ok"], "b-1", [5, 9]),
        ),
        C(
            "add a subject with spaces and accents",
            ["request", "add", ok, "--subject", "Zoë O'Neil", "--indices", "7", "--id", "z-1"],
            ok=True,
            check=added_exactly(f["md_ok"], "z-1", [7]),
        ),
        C("verify a good directory", ["request", "verify", ok], ok=True, check=verifies(f["md_ok"])),
        C("list a good directory", ["request", "list", ok, "--format", "json"], ok=True),
        C(
            "adopt a copy without ledger.head",
            ["request", "init", str(f["md_adopt"]), "--adopt"],
            ok=True,
            check=verifies(f["md_adopt"]),
        ),
        C("apply nothing pending with a known method", [*P, "--method", "ft"], ok=True),
        C("apply a plain model without --method (auto), nothing pending", P, ok=True),
    ]


__all__ = ["build_engineer_workspace", "engineer_cases"]
