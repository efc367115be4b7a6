"""SISA on Fashion-MNIST: the ensemble's accuracy against one model, and what exact deletion costs.

    python benchmarks/sisa_fashion_mnist.py --epochs 0 --member-epochs 20          # the published run
    python benchmarks/sisa_fashion_mnist.py --epochs 0 --member-epochs 20 --part 1/4 --max-minutes 40

Estimated on 2 idle cores (scaled from the 5-epoch run's timings, ~0.1 ms per sample-pass): about 2 h in all;
with ``--part i/4`` each part is 25–40 min (part 1 also trains the three 15-epoch single models when they are not
cached, and times (a) and (b)); ``--max-minutes 40`` keeps a part under 45 min even if that estimate is low.

``--epochs`` is the single model's recipe (0 = the dataset's default recipe, 15 epochs for fashion_mnist);
``--member-epochs`` the SISA members' (default: the single model's). For every S (shards) × R (slices) of the grid,
one SISA ensemble of small_cnn members is trained on the full training set and:

* its test accuracy (vote and softmax aggregation, and the members' mean) is set beside the single model's and the
  default single model's (`unlearnkit.oracle.train_or_load`, library cache);
* three deletion requests are applied, each to a fresh copy of the ensemble: (a) one random training image,
  (b) a random 1 % (``random:0.01``), (c) the whole class 0 (``class:0``). Each costs ``samples_processed``
  sample-passes and a wall time (`unlearnkit.sisa.DeletionReport`), set beside the same ensemble trained from
  scratch on the reduced data (`unlearnkit.sisa.oracle`, timed right after), whose weights must equal the deleted
  ensemble's (exactness, 0 = bit-identical), and beside the single model retrained without the image;
* for the S in ``--gap-shards``: the average gap of the deleted ensemble to the single model retrained without
  the forget set (``random:0.1`` and ``class:0``), beside the approximate methods' gaps.

The single model retrained without the one image is timed like for like: (a) the single recipe on the full
training set and (b) on the set without the image, back to back, through the same function, uncached.

**Resumable and splittable** (benchmarks/README.md): every finished unit (the single model, the retrain timing,
each ensemble's accuracy, each deletion, each gap row) is appended to the ``.jsonl`` beside ``--out`` as it
finishes, keyed by the arguments that define it; a rerun with the same arguments skips finished units. Trained
ensembles and their stage checkpoints persist in the library cache (``<cache>/sisa-bench/``, removed per cell once
all its units are recorded), so a killed run loses at most the unit in flight. ``--part i/n`` runs the i-th of n
interleaved shares of the (S, R) cells (part 1 also does the single-model units); ``--max-minutes M`` starts no
new unit after M minutes. The markdown is written from whatever rows exist (``·`` = not yet measured).

OpenMP: unless ``OMP_WAIT_POLICY`` is already set, this script sets it to PASSIVE before torch loads. With
OpenMP's default (spinning) threads, a 2-thread kernel on a 2-core machine shared with other processes stalls at
every barrier whose partner thread is descheduled (measured 12–18× slower training at load ~14, CPU time
inflated alike); PASSIVE threads sleep instead. Results do not depend on it; timings do.
"""

from __future__ import annotations

import os
import sys

if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY", "unset")

import argparse  # noqa: E402
import copy  # noqa: E402
import dataclasses  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

from unlearnkit import __version__, sisa  # noqa: E402
from unlearnkit._io import write_text_atomic  # noqa: E402
from unlearnkit.cache import TensorCache, cache_dir  # noqa: E402
from unlearnkit.data import load_dataset, split_for  # noqa: E402
from unlearnkit.device import resolve_device  # noqa: E402
from unlearnkit.errors import ConfigError, UnlearnkitError  # noqa: E402
from unlearnkit.evaluation import EvalOptions, EvaluationCache, evaluate  # noqa: E402
from unlearnkit.models import model_for_dataset  # noqa: E402
from unlearnkit.oracle import train_or_load  # noqa: E402
from unlearnkit.training import default_recipe, predict_logits, train  # noqa: E402

HERE = Path(__file__).resolve().parent


def _report_module() -> Any:
    """``sisa_fashion_mnist_report.py`` beside this file (the markdown and the targets), loaded by path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sisa_fashion_mnist_report", HERE / "sisa_fashion_mnist_report.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


report = _report_module()
TARGET_SHARDS: int = report.TARGET_SHARDS  # the targets are read on S = 10
REQUESTS: tuple[str, ...] = report.REQUESTS
GAP_SPECS: tuple[str, ...] = report.GAP_SPECS
AGGS: tuple[str, ...] = report.AGGS
GAP_KEYS = ("accuracy_forget", "accuracy_retain", "accuracy_test", "mia_efficacy_forget")


# ------------------------------------------------------------------------------------------------ records
def _canon(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"))


class Records:
    """The ``.jsonl`` of finished units: read once, appended to one line at a time (a killed write loses one line)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_key: dict[str, dict[str, Any]] = {}
        self.skipped = 0  # unreadable lines and rows of the older, unkeyed format
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line) if line.strip() else None
                except json.JSONDecodeError:
                    row = None
                if isinstance(row, dict) and isinstance(row.get("key"), dict):
                    self.by_key[_canon(row["key"])] = row
                elif line.strip():
                    self.skipped += 1

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        return self.by_key.get(_canon(key))

    def append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(row, sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line  # a line cut by a kill stays on its own (unreadable) line
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.by_key[_canon(row["key"])] = row


def _git(*args: str) -> str:
    out = subprocess.run(["git", "-C", str(HERE), *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


# ------------------------------------------------------------------------------------------------ helpers
def _log(msg: str, t0: float) -> None:
    print(f"[{time.perf_counter() - t0:7.0f} s] {msg}", flush=True)


def _load() -> dict[str, Any]:
    """The 1-minute load average now (other processes competing for the cores)."""
    try:
        return {"loadavg_1min": round(os.getloadavg()[0], 2)}
    except OSError:
        return {}


def _max_abs_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """Max. |a − b| over every tensor of the two state dicts (inf when their keys or shapes differ)."""
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return float("inf")
    worst = 0.0
    for k, va in sa.items():
        vb = sb[k]
        if va.shape != vb.shape:
            return float("inf")
        if va.numel():
            worst = max(worst, float((va.double() - vb.double()).abs().max()))
    return worst


def _acc(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(-1) == y).float().mean() * 100)


def _single_image_expectation(ens: sisa.SISAEnsemble) -> float:
    """Expected sample fraction of deleting one image drawn uniformly from the training set (exact, no training)."""
    epochs = sisa.stage_epochs(ens.spec.recipe["epochs"], ens.spec.slices)
    r_max = ens.spec.slices
    total = sisa.full_retrain_samples(ens)
    fractions = []
    for s in range(ens.spec.shards):
        cum = [len(ens.training_indices(s, r)) for r in range(1, r_max + 1)]  # points of stage r (cumulative)
        per_slice = [cum[0]] + [cum[r] - cum[r - 1] for r in range(1, r_max)]
        for r in range(r_max):  # an image of slice r restarts stage r+1 … R, each one image smaller
            work = sum((cum[t] - 1) * epochs[t] for t in range(r, r_max))
            full = total - sum(epochs[t] for t in range(r, r_max))
            fractions += [work / full] * per_slice[r]
    return sum(fractions) / len(fractions)


def _gap_row(rec: dict[str, Any]) -> dict[str, Any]:
    u = rec["models"]["unlearned"]["metrics"]
    r = rec["models"]["retrained"]["metrics"]
    return {
        **{k: u.get(k) for k in GAP_KEYS},
        **{f"retrained_{k}": r.get(k) for k in GAP_KEYS},
        "avg_gap": rec["gaps_to_retrained"].get("avg_gap_to_retrained"),
    }


def _approximate_gaps(path: Path) -> dict[tuple[str, str], tuple[float, int]]:
    """Mean avg gap per (forget spec, method) over the seeds of a bench's JSONL records."""
    out: dict[tuple[str, str], list[float]] = {}
    if not path.is_file():
        return {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        gap = (r.get("gaps_to_retrained") or {}).get("avg_gap_to_retrained")
        if gap is not None:
            out.setdefault((r["task"]["forget"]["spec"], r["method"]["name"]), []).append(float(gap))
    return {k: (sum(v) / len(v), len(v)) for k, v in out.items()}


def _with_aggregation(ens: sisa.SISAEnsemble, how: str) -> sisa.SISAEnsemble:
    if how == ens.spec.aggregation:
        return ens
    other = copy.deepcopy(ens)  # same weights, other aggregation
    other.spec = dataclasses.replace(other.spec, aggregation=how)  # type: ignore[arg-type]
    return other


# ------------------------------------------------------------------------------------------------ the bench
class Bench:
    """The units of one benchmark configuration: which are recorded, and how to measure the missing ones."""

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args, self.argv = args, argv
        self.t_start = time.perf_counter()
        self.deadline = self.t_start + args.max_minutes * 60 if args.max_minutes else float("inf")
        self.stopped = False
        self.out_md = Path(args.out)
        self.approximate = args.approximate or f"benchmarks/{args.dataset}.jsonl"
        self.records = Records(self.out_md.with_suffix(".jsonl"))
        self.dev = resolve_device(args.device)
        self.bundle = load_dataset(args.dataset, args.data_dir)
        info = self.bundle.info
        model_for_dataset(args.model, info)  # an unknown model is refused here
        self.base = default_recipe(info.name, args.model)
        self.recipe = dataclasses.replace(self.base, epochs=args.epochs) if args.epochs else self.base
        member_epochs = args.member_epochs or self.recipe.epochs
        self.member_recipe = dataclasses.replace(self.base, epochs=member_epochs)
        for r in args.slices:  # a stage with 0 epochs is refused before any compute
            try:
                sisa.check_stage_epochs(member_epochs, r)
            except ConfigError as exc:
                raise ConfigError(f"--member-epochs {member_epochs} with --slices {r}: {exc}") from None
        self.command = "python benchmarks/sisa_fashion_mnist.py " + shlex.join(argv)
        self.single_key = {"dataset": info.name, "model": args.model, "epochs": self.recipe.epochs, "seed": args.seed}
        self.cell_base = {
            **self.single_key,
            "member_epochs": member_epochs,
            "aggregation": args.aggregation,
        }
        n = len(self.bundle.train)
        gen = torch.Generator().manual_seed(args.seed)
        self.one_image = int(torch.randint(n, (1,), generator=gen))
        self.splits = {s: split_for(self.bundle, s, args.seed) for s in ("random:0.01", *GAP_SPECS)}
        self.requests = {
            "one image": [self.one_image],
            "random 1 %": sorted(int(i) for i in self.splits["random:0.01"].forget),
            "class 0": sisa.class_indices(self.bundle.train, [0]),
        }
        sha = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no", "--", ":/src"))
        self.env = {
            "package": {"name": "unlearnkit", "version": __version__, "git_sha": sha or None, "src_dirty": dirty},
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "omp_wait_policy": OMP_WAIT_POLICY,
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "device": str(self.dev),
            "command": self.command.strip(),
        }
        self.ecache = {a: EvaluationCache() for a in AGGS}  # the cache keys models by weights, not aggregation
        self._retrained: dict[str, Any] = {}

    # --- bookkeeping -------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        _log(msg, self.t_start)

    def stop(self) -> bool:
        """True (and said once) when ``--max-minutes`` has passed: no new unit starts."""
        if not self.stopped and time.perf_counter() > self.deadline:
            self.stopped = True
            self.log(f"--max-minutes {self.args.max_minutes:g} reached: no new unit starts; rerun to continue")
        return self.stopped

    def record(self, key: dict[str, Any], row: dict[str, Any], seconds: float) -> dict[str, Any]:
        full = {
            "key": key,
            **row,
            "unit_seconds": round(seconds, 3),
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
            **self.env,
            **_load(),
        }
        if key.get("shards"):  # benchmarks/stale.py reads the method of a row
            full["method"] = {"name": "sisa"}
        self.records.append(full)
        return full

    def cells(self) -> list[tuple[int, int]]:
        """The (S, R) grid, S = 10 first (the targets), dealt round-robin to ``--part``."""
        grid = [(s, r) for s in self.args.shards for r in self.args.slices]
        grid.sort(key=lambda c: c[0] != TARGET_SHARDS)
        i, n = self.args.part
        return grid[i - 1 :: n]

    def cell_key(self, shards: int, slices: int, unit: str, **more: Any) -> dict[str, Any]:
        return {**self.cell_base, "shards": shards, "slices": slices, "unit": unit, **more}

    def cell_keys(self, shards: int, slices: int) -> list[dict[str, Any]]:
        keys = [self.cell_key(shards, slices, "accuracy")]
        keys += [self.cell_key(shards, slices, "deletion", request=q) for q in REQUESTS]
        if shards in self.args.gap_shards:
            keys += [self.cell_key(shards, slices, "gap", forget=f, scored_as=a) for f in GAP_SPECS for a in AGGS]
        return keys

    def single_keys(self) -> list[dict[str, Any]]:
        return [
            {**self.single_key, "unit": "single"},
            {**self.single_key, "unit": "single_retrain_timing", "image": self.one_image},
            *({**self.single_key, "unit": "gap", "forget": f} for f in GAP_SPECS),
        ]

    def retrained(self, spec: str) -> Any:
        if spec not in self._retrained:
            self._retrained[spec] = self.trained(self.splits[spec])
        return self._retrained[spec]

    def trained(self, split: Any, recipe: Any = None) -> Any:
        """`train_or_load` of the single model (library cache): the original (split None) or a retrained one."""
        a = self.args
        return train_or_load(self.bundle, a.model, split, seed=a.seed, recipe=recipe or self.recipe, device=self.dev)

    # --- the single model ----------------------------------------------------------------------------------
    def run_single(self) -> None:
        args, info = self.args, self.bundle.info
        key = {**self.single_key, "unit": "single"}
        if self.records.get(key) is None and not self.stop():
            t0 = time.perf_counter()
            single = self.trained(None)
            default = single
            if self.recipe != self.base:
                default = train_or_load(
                    self.bundle, args.model, None, seed=args.seed, recipe=self.base, device=self.dev
                )
            row = self.record(
                key,
                {
                    "kind": "single",
                    "recipe": self.recipe.to_dict(),
                    "test_accuracy": single.meta["accuracy_test"],
                    "train_accuracy": single.meta["accuracy_train"],
                    "from_cache": single.from_cache,
                    "train_seconds_cached_entry": single.meta["wall_seconds"],
                    "default_recipe_epochs": self.base.epochs,
                    "default_test_accuracy": default.meta["accuracy_test"],
                },
                time.perf_counter() - t0,
            )
            self.log(
                f"single model: test acc {row['test_accuracy']:.2f} % (default {row['default_test_accuracy']:.2f})"
            )
        key = {**self.single_key, "unit": "single_retrain_timing", "image": self.one_image}
        if self.records.get(key) is None and not self.stop():
            n = len(self.bundle.train)
            timing: dict[str, Any] = {"kind": "single_retrain_timing", "recipe": self.recipe.to_dict()}
            t0 = time.perf_counter()
            for name, idx in (("full", list(range(n))), ("without_one", [i for i in range(n) if i != self.one_image])):
                timing[f"{name}_loadavg_before"] = _load().get("loadavg_1min")
                torch.manual_seed(args.seed)
                net = model_for_dataset(args.model, info)
                data = self.bundle.train.subset(idx)
                w0, c0 = time.perf_counter(), time.process_time()
                train(net, data, self.recipe, seed=args.seed, augment=info.augment, device=self.dev, progress=False)
                timing[f"{name}_seconds"] = time.perf_counter() - w0
                timing[f"{name}_cpu_seconds"] = time.process_time() - c0
                timing[f"{name}_samples"] = len(idx) * self.recipe.epochs
                self.log(f"single-model training on {len(idx):,} images: {timing[f'{name}_seconds']:.1f} s")
            timing["ratio_without_one_to_full"] = timing["without_one_seconds"] / timing["full_seconds"]
            self.record(key, timing, time.perf_counter() - t0)
        single = None
        for spec in GAP_SPECS:
            key = {**self.single_key, "unit": "gap", "forget": spec}
            if self.records.get(key) is not None or self.stop():
                continue
            t0 = time.perf_counter()
            single = single or self.trained(None)
            rec = evaluate(
                single.model,
                self.bundle,
                self.splits[spec],
                retrained=self.retrained(spec).model,
                device=self.dev,
                options=EvalOptions(audits="none", cache=self.ecache[args.aggregation]),
            )
            g = {"kind": "gap", "model": "single original (no deletion)", "forget": spec, **_gap_row(rec)}
            self.record(key, g, time.perf_counter() - t0)
            self.log(f"single original {spec}: avg gap to the retrained model {g['avg_gap']:.2f}")

    # --- one (S, R) cell ------------------------------------------------------------------------------------
    def store(self, shards: int, slices: int) -> TensorCache:
        """The cell's stage checkpoints and saved ensembles (persistent: a killed run keeps them)."""
        digest = hashlib.sha256(_canon(self.cell_key(shards, slices, "cell")).encode()).hexdigest()[:16]
        return TensorCache(f"S{shards}R{slices}-{digest}", root=cache_dir() / "sisa-bench")

    def _ens_key(self, store: TensorCache, name: str) -> str:
        return store.key(ensemble=name)

    def save_ens(self, store: TensorCache, name: str, ens: sisa.SISAEnsemble, seconds: float | None = None) -> None:
        meta = {sisa.SISA_META_KEY: json.dumps(dataclasses.asdict(ens.spec))}
        if seconds is not None:
            meta["deletion_seconds"] = repr(seconds)
        store.save(self._ens_key(store, name), ens.state_dict(), meta)

    def load_ens(self, store: TensorCache, name: str) -> tuple[sisa.SISAEnsemble, dict[str, str]] | None:
        key = self._ens_key(store, name)
        hit = store.load_with_meta(key)  # verified against its SHA-256 (a damaged entry reads as None)
        if hit is None:
            return None
        return sisa.load_sisa(store.path(key), device="cpu"), hit[1]

    def run_cell(self, shards: int, slices: int) -> None:
        args, info, train_set = self.args, self.bundle.info, self.bundle.train
        keys = self.cell_keys(shards, slices)
        store = self.store(shards, slices)
        tag = f"S={shards} R={slices}"
        if all(self.records.get(k) is not None for k in keys):
            shutil.rmtree(store.root, ignore_errors=True)
            return
        if self.stop():
            return
        loaded = self.load_ens(store, "trained")
        if loaded is not None:
            ens = loaded[0]
            self.log(f"{tag}: trained ensemble found in the cache")
        else:
            t0 = time.perf_counter()
            ens = sisa.train_sisa(
                model_for_dataset(args.model, info),
                train_set,
                shards=shards,
                slices=slices,
                recipe=self.member_recipe,
                seed=args.seed,
                aggregation=args.aggregation,
                device=self.dev,
                cache=store,
                augment=info.augment,
                dataset=info.name,
            )
            self.save_ens(store, "trained", ens)
            self.log(f"{tag}: trained in {time.perf_counter() - t0:.1f} s")
        key = self.cell_key(shards, slices, "accuracy")
        if self.records.get(key) is None:
            t0 = time.perf_counter()
            outs, y = [], torch.empty(0)
            for m in ens.members:
                logits, y = predict_logits(m, self.bundle.test, device=self.dev)
                outs.append(logits)
            stacked = torch.stack(outs)
            acc = {
                "kind": "accuracy",
                "shards": shards,
                "slices": slices,
                "member_recipe": self.member_recipe.to_dict(),
                "vote": _acc(ens.aggregate(stacked, "vote"), y),
                "softmax": _acc(ens.aggregate(stacked, "softmax"), y),
                "members_mean": sum(_acc(m, y) for m in stacked) / shards,
                "train_seconds": float(ens.spec.train_seconds or 0.0),
                "train_samples": ens.spec.train_samples,
                "train_threads": ens.spec.threads,
                "single_one_image_expected_sample_fraction": _single_image_expectation(ens),
            }
            self.record(key, acc, time.perf_counter() - t0)
            self.log(f"{tag}: test acc vote {acc['vote']:.2f}, softmax {acc['softmax']:.2f}")
        gaps = shards in args.gap_shards
        for name, idx in self.requests.items():
            key = self.cell_key(shards, slices, "deletion", request=name)
            if self.records.get(key) is not None:
                continue
            if self.stop():
                return
            t0 = time.perf_counter()
            e = copy.deepcopy(ens)
            c0 = time.process_time()
            rep = e.delete(train_set, idx, device=self.dev, cache=store)
            cpu_s = time.process_time() - c0
            w0, c0 = time.perf_counter(), time.process_time()
            scratch = sisa.oracle(e, train_set, device=self.dev, augment=info.augment)
            full_s, full_cpu_s = time.perf_counter() - w0, time.process_time() - c0
            diff = _max_abs_diff(e, scratch)
            out_diff = None
            if name == "one image":
                probe = self.bundle.test.subset(range(min(2000, len(self.bundle.test))))
                a, _ = predict_logits(e, probe, device=self.dev)
                b, _ = predict_logits(scratch, probe, device=self.dev)
                out_diff = float((a - b).abs().max())
            if gaps and name == "class 0":  # the gap rows score these two
                self.save_ens(store, "deleted class 0", e, rep.wall_seconds)
                self.save_ens(store, "oracle class 0", scratch)
            row = {
                "kind": "deletion",
                "shards": shards,
                "slices": slices,
                "request": name,
                "points": len(idx),
                "shards_retrained": len(rep.shards),
                "restart_stages": {str(k): v for k, v in rep.shards.items()},
                "checkpoints_reused": rep.checkpoints_reused,
                "missing_checkpoints": rep.missing_checkpoints,
                "samples_processed": rep.samples_processed,
                "full_retrain_samples": rep.full_retrain_samples,
                "sample_fraction": rep.sample_fraction,
                "wall_seconds": rep.wall_seconds,
                "full_retrain_seconds": full_s,
                "wall_fraction": rep.wall_seconds / full_s,
                # CPU time of this process: insensitive to other jobs sharing the machine, unlike wall time
                "cpu_seconds": cpu_s,
                "full_retrain_cpu_seconds": full_cpu_s,
                "deletion_threads": rep.threads,
                "max_abs_diff_state_dict": diff,
                "max_abs_diff_outputs": out_diff,
                "outputs_compared_on": min(2000, len(self.bundle.test)) if out_diff is not None else 0,
            }
            self.record(key, row, time.perf_counter() - t0)
            self.log(
                f"{tag} delete {name} ({len(idx)} points): {len(rep.shards)} shard(s), {rep.sample_fraction:.1%} "
                f"of the samples, {rep.wall_seconds:.1f} s vs full retrain {full_s:.1f} s "
                f"({row['wall_fraction']:.1%}); max |Δ| to oracle {diff:g}"
            )
        if gaps and not self.run_gaps(shards, slices, ens, store):
            return
        if all(self.records.get(k) is not None for k in keys):
            shutil.rmtree(store.root, ignore_errors=True)

    def _deleted(self, store: TensorCache, ens: sisa.SISAEnsemble, spec: str) -> tuple[Any, Any, float]:
        """(deleted ensemble, its from-scratch oracle or None, deletion seconds) of a gap request, saved or made."""
        name = "deleted class 0" if spec == "class:0" else f"deleted {spec}"
        hit = self.load_ens(store, name)
        own = self.load_ens(store, "oracle class 0") if spec == "class:0" else None
        if hit is not None and (spec != "class:0" or own is not None):
            return hit[0], own[0] if own else None, float(hit[1].get("deletion_seconds", "nan"))
        idx = self.requests["class 0"] if spec == "class:0" else self.splits[spec].forget.tolist()
        e = copy.deepcopy(ens)
        rep = e.delete(self.bundle.train, idx, device=self.dev, cache=store)
        self.save_ens(store, name, e, rep.wall_seconds)
        scratch = None
        if spec == "class:0":
            scratch = sisa.oracle(e, self.bundle.train, device=self.dev, augment=self.bundle.info.augment)
            self.save_ens(store, "oracle class 0", scratch)
        return e, scratch, rep.wall_seconds

    def run_gaps(self, shards: int, slices: int, ens: sisa.SISAEnsemble, store: TensorCache) -> bool:
        """The gap rows of a cell; False when ``--max-minutes`` stopped them."""
        tag = f"S={shards} R={slices}"
        for spec in GAP_SPECS:
            keys = {a: self.cell_key(shards, slices, "gap", forget=spec, scored_as=a) for a in AGGS}
            todo = [a for a in AGGS if self.records.get(keys[a]) is None]
            if not todo:
                continue
            if self.stop():
                return False
            t0 = time.perf_counter()
            deleted, own, seconds = self._deleted(store, ens, spec)
            for how in todo:
                scored = _with_aggregation(deleted, how)
                rec = evaluate(
                    scored,
                    self.bundle,
                    self.splits[spec],
                    retrained=self.retrained(spec).model,
                    device=self.dev,
                    options=EvalOptions(audits="none", cache=self.ecache[how]),
                )
                g = {"kind": "gap", "model": f"SISA {tag}", "forget": spec, "aggregation": how, **_gap_row(rec)}
                g["deletion_seconds"] = seconds
                if own is not None:  # against its own from-scratch oracle (same weights: gap 0)
                    o = evaluate(
                        scored,
                        self.bundle,
                        self.splits[spec],
                        retrained=_with_aggregation(own, how),
                        device=self.dev,
                        options=EvalOptions(audits="none", cache=self.ecache[how]),
                    )
                    g["avg_gap_to_sisa_oracle"] = o["gaps_to_retrained"].get("avg_gap_to_retrained")
                self.record(keys[how], g, time.perf_counter() - t0)
                t0 = time.perf_counter()
                self.log(f"{tag} {spec} ({how}): avg gap to the retrained single model {g['avg_gap']:.2f}")
        return True

    # --- all ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        if self.records.skipped:
            self.log(f"{self.records.skipped} lines of {self.records.path.name} are unkeyed or unreadable: ignored")
        if self.args.part[0] == 1:
            self.run_single()
        for shards, slices in self.cells():
            self.run_cell(shards, slices)
        self.write()

    def all_keys(self) -> list[dict[str, Any]]:
        grid = [(s, r) for s in self.args.shards for r in self.args.slices]
        return self.single_keys() + [k for s, r in grid for k in self.cell_keys(s, r)]

    def write(self) -> None:
        keys = self.all_keys()
        have = [k for k in keys if self.records.get(k) is not None]
        text = report.render(self, _approximate_gaps(Path(self.approximate)))
        write_text_atomic(self.out_md, text)
        self.log(
            f"wrote {self.out_md} from {len(have)} of {len(keys)} units"
            + ("" if len(have) == len(keys) else "; rerun the same command to measure the rest")
        )


def _part(text: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected i/n (e.g. 1/4), got {text!r}") from None
    if not 1 <= i <= n:
        raise argparse.ArgumentTypeError(f"{text}: expected 1 ≤ i ≤ n, e.g. 1/4")
    return i, n


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python benchmarks/sisa_fashion_mnist.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--dataset", default="fashion_mnist", help="dataset (default fashion_mnist)")
    ap.add_argument("--model", default="small_cnn", help="member / single-model architecture (default small_cnn)")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 5, 10, 20], help="S values (default 1 5 10 20)")
    ap.add_argument("--slices", type=int, nargs="+", default=[1, 5], help="R values (default 1 5)")
    ap.add_argument(
        "--epochs",
        type=int,
        default=0,
        help="epochs of the single model's recipe (the rest is the dataset's default recipe); 0 = the default "
        "recipe's own (15 for fashion_mnist). Default 0",
    )
    ap.add_argument(
        "--member-epochs",
        type=int,
        default=None,
        help="epochs of every SISA member's recipe (same default recipe otherwise); default: the single model's",
    )
    ap.add_argument(
        "--gap-shards",
        type=int,
        nargs="*",
        default=[TARGET_SHARDS],
        help="S values (with every R) whose deleted ensemble gets the avg gap to the retrained single model "
        "(random:0.1 and class:0; costs one more deletion and S-member evaluations). Default 10",
    )
    ap.add_argument("--aggregation", choices=AGGS, default="vote", help="SISA aggregation (vote)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the models, the SISA partition and the splits (0)")
    ap.add_argument("--part", type=_part, default=(1, 1), metavar="i/n", help="the i-th of n shares of the cells")
    ap.add_argument("--max-minutes", type=float, default=None, help="start no new unit after this many minutes")
    ap.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where to train (default auto)")
    ap.add_argument("--data-dir", default=None, help="folder with the dataset files (default: found automatically)")
    ap.add_argument(
        "--approximate",
        default=None,
        help="bench records whose per-method avg gaps are listed beside SISA's (default benchmarks/<dataset>.jsonl; "
        "a missing file leaves them out)",
    )
    ap.add_argument(
        "--out",
        default="benchmarks/sisa_fashion_mnist.md",
        help="markdown report; the rows go beside it with the suffix .jsonl (default benchmarks/sisa_fashion_mnist.md)",
    )
    args = ap.parse_args(argv)
    bad = [f"--shards {s}" for s in args.shards if s < 1] + [f"--slices {r}" for r in args.slices if r < 1]
    if args.epochs < 0:
        bad.append(f"--epochs {args.epochs} (use 0 for the default recipe)")
    if args.member_epochs is not None and args.member_epochs < 1:
        bad.append(f"--member-epochs {args.member_epochs} (use ≥ 1, or leave it out for the single model's)")
    if args.max_minutes is not None and args.max_minutes <= 0:
        bad.append(f"--max-minutes {args.max_minutes:g} (use a positive number)")
    if bad:
        ap.error("invalid " + ", ".join(bad))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        bench = Bench(args, argv)
    except UnlearnkitError as exc:  # a bad dataset, model, data folder or recipe: one line, before any compute
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bench.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
