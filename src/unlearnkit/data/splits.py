"""Forget-set specs and splits.

One grammar for CLI and API:

* ``class:3`` or ``class:3,7``: every training image of those classes;
* ``random:0.1``: that fraction of the training set, drawn with the split seed;
* ``indices:FILE``: a JSON list (or an object with key ``"indices"``) or a text file of training indices;
* ``poisoned`` or ``poisoned:0.25``: every manipulated training sample, or a seeded fraction of them (the part the
  defender found; the rest stays in the retain set) — needs a bundle from `unlearnkit.data.manipulations.apply`.

A `Split` holds forget / retain / test indices, the seed and a SHA-256 of the indices; it saves as JSON
beside results and reloads identically.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import read_json, sha256_bytes, write_json_atomic
from ..errors import ConfigError

SPLIT_FORMAT = 1


@dataclass(frozen=True)
class ForgetSpec:
    """A parsed forget spec (no dataset attached yet)."""

    kind: str  # "class" | "random" | "indices" | "poisoned" | "none"
    classes: tuple[int, ...] = ()
    fraction: float | None = None
    indices: tuple[int, ...] = ()
    source: str = ""  # the text the user gave

    def __str__(self) -> str:
        if self.kind == "class":
            return "class:" + ",".join(str(c) for c in self.classes)
        if self.kind == "random":
            return f"random:{self.fraction:g}"
        if self.kind == "poisoned":
            return "poisoned" if self.fraction == 1.0 else f"poisoned:{self.fraction:g}"
        if self.kind == "indices":
            return f"indices:{len(self.indices)}@{sha256_bytes(np.asarray(self.indices, np.int64).tobytes())[:12]}"
        return "none"


_SPEC_HELP = "expected one of class:3, class:3,7, random:0.1, indices:FILE, poisoned or poisoned:0.25"


def parse_forget_spec(spec: str | ForgetSpec | None) -> ForgetSpec:
    """Parse the forget-spec grammar; raise `ConfigError` naming the problem and the fix."""
    if isinstance(spec, ForgetSpec):
        return spec
    if spec is None or spec == "none":
        return ForgetSpec("none", source="none")
    s: object = spec  # checked as any object: the API is called with whatever the user passes
    if isinstance(s, str) and s.strip().lower() == "poisoned":
        return ForgetSpec("poisoned", fraction=1.0, source=s)
    if not isinstance(s, str) or ":" not in s:
        raise ConfigError(f"malformed forget spec {spec!r}: {_SPEC_HELP}")
    kind, _, arg = spec.partition(":")
    kind, arg = kind.strip().lower(), arg.strip()
    if kind == "class":
        if not re.fullmatch(r"-?\d+(\s*,\s*-?\d+)*", arg):
            raise ConfigError(
                f"malformed forget spec {spec!r}: class needs integers separated by commas, e.g. class:3,7"
            )
        classes = [int(c) for c in arg.split(",")]
        if len(set(classes)) != len(classes):
            raise ConfigError(f"forget spec {spec!r} names a class twice")
        return ForgetSpec("class", classes=tuple(sorted(classes)), source=spec)
    if kind == "random":
        try:
            frac = float(arg)
        except ValueError:
            raise ConfigError(f"malformed forget spec {spec!r}: random needs a fraction, e.g. random:0.1") from None
        if not (0.0 < frac < 1.0):
            raise ConfigError(f"forget fraction must be strictly between 0 and 1, got {frac:g} in {spec!r}")
        return ForgetSpec("random", fraction=frac, source=spec)
    if kind == "indices":
        return ForgetSpec("indices", indices=tuple(_read_indices_file(arg)), source=spec)
    if kind == "poisoned":
        try:
            frac = float(arg)
        except ValueError:
            raise ConfigError(
                f"malformed forget spec {spec!r}: poisoned takes the known fraction, e.g. poisoned:0.25"
            ) from None
        if not (0.0 < frac <= 1.0):
            raise ConfigError(f"the known fraction of poisoned must be in (0, 1], got {frac:g} in {spec!r}")
        return ForgetSpec("poisoned", fraction=frac, source=spec)
    raise ConfigError(f"malformed forget spec {spec!r}: unknown kind {kind!r}: {_SPEC_HELP}")


def _read_indices_file(path: str) -> list[int]:
    p = Path(path)
    if not path:
        raise ConfigError(
            "forget spec indices: needs a file, e.g. indices:forget.txt (a JSON list or one index per line)"
        )
    if p.is_dir():
        raise ConfigError(f"indices file {path!r} is a folder; pass a text file (a JSON list or one index per line)")
    if not p.is_file():
        raise ConfigError(f"indices file {path!r} does not exist; write a JSON list or one index per line")
    try:
        text = p.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"indices file {path!r} is not UTF-8 text; write a JSON list or one index per line") from None
    except OSError as exc:
        raise ConfigError(f"cannot read indices file {path!r} ({exc.strerror or exc})") from None
    if not text:
        raise ConfigError(f"indices file {path!r} is empty; write a JSON list or one index per line")
    try:
        obj: Any = json.loads(text) if text[:1] in "[{" else [int(t) for t in re.split(r"[\s,]+", text) if t]
    except (ValueError, RecursionError) as exc:
        why = str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"cannot parse indices file {path!r} ({why}); expected a JSON list or one integer per line"
        ) from None
    if isinstance(obj, dict):
        obj = obj.get("indices", obj.get("forget"))
    if not isinstance(obj, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in obj):
        raise ConfigError(f"indices file {path!r} must hold a list of integers")
    if any(not -(2**63) <= v < 2**63 for v in obj):
        raise ConfigError(f"indices file {path!r} holds an index too large to be a training index")
    return obj


@dataclass(frozen=True, eq=False)
class Split:
    """Forget / retain / test indices of one dataset, with the spec, the seed and a digest."""

    dataset: str
    spec: str
    seed: int
    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    num_train: int
    forget_classes: tuple[int, ...] = ()
    sha256: str = field(default="")
    manipulation: str = ""  # the training-data manipulation of the dataset, e.g. "badnets:…@seed=0" ("" = none)

    def __post_init__(self) -> None:
        for name in ("forget", "retain", "test"):
            object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.int64))
        digest = split_digest(self.dataset, self.forget, self.retain, self.test, self.manipulation)
        if self.sha256 and self.sha256 != digest:
            raise ConfigError(
                f"split file digest {self.sha256[:12]}… does not match its indices ({digest[:12]}…); "
                "the file was edited or corrupted: make the split again"
            )
        object.__setattr__(self, "sha256", digest)

    @property
    def kind(self) -> str:
        return self.spec.split(":", 1)[0]

    @property
    def is_classwise(self) -> bool:
        return bool(self.forget_classes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPLIT_FORMAT,
            "dataset": self.dataset,
            "spec": self.spec,
            "seed": self.seed,
            "num_train": self.num_train,
            "forget_classes": list(self.forget_classes),
            "sha256": self.sha256,
            **({"manipulation": self.manipulation} if self.manipulation else {}),
            "forget": self.forget.tolist(),
            "retain": self.retain.tolist(),
            "test": self.test.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Split:
        try:
            return cls(
                d["dataset"],
                d["spec"],
                int(d["seed"]),
                np.asarray(d["forget"]),
                np.asarray(d["retain"]),
                np.asarray(d["test"]),
                int(d["num_train"]),
                tuple(d.get("forget_classes", ())),
                d["sha256"],
                str(d.get("manipulation", "")),
            )
        except KeyError as exc:
            raise ConfigError(f"split JSON lacks key {exc}; was it written by `unlearnkit`?") from None

    def save(self, path: str | os.PathLike) -> Path:
        return write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Split:
        return cls.from_dict(read_json(path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Split) and self.sha256 == other.sha256 and self.spec == other.spec

    def __hash__(self) -> int:
        return hash(self.sha256)


def split_digest(dataset: str, forget: np.ndarray, retain: np.ndarray, test: np.ndarray, manipulation: str = "") -> str:
    parts = [
        *([b"|manipulation|", manipulation.encode()] if manipulation else []),
        dataset.encode(),
        b"|forget|",
        np.asarray(forget, np.int64).tobytes(),
        b"|retain|",
        np.asarray(retain, np.int64).tobytes(),
        b"|test|",
        np.asarray(test, np.int64).tobytes(),
    ]
    return sha256_bytes(b"".join(parts))


def make_split(
    dataset: str,
    train_targets: Any,
    num_test: int,
    spec: str | ForgetSpec | None,
    seed: int = 0,
    num_classes: int | None = None,
    manipulated: Any = None,
    manipulation: str = "",
) -> Split:
    """Build the split for ``spec`` over a training set with labels ``train_targets``.

    ``manipulated`` (the manipulated training indices) is what ``poisoned`` specs select from; ``manipulation``
    names the manipulation and enters the digest, so splits of differently manipulated data never collide.

    Every check runs here, before any compute: a class outside [0, K), an empty forget set, a forget set
    equal to the whole training set, duplicate or out-of-range indices.
    """
    s: object = seed  # checked as any object: the API is called with whatever the user passes
    if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= int(s) < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    fs = parse_forget_spec(spec)
    y = np.asarray(train_targets, dtype=np.int64)
    n = len(y)
    k = int(num_classes if num_classes is not None else (y.max() + 1 if n else 0))
    forget_classes: tuple[int, ...] = ()
    if fs.kind == "none":
        forget = np.zeros(0, np.int64)
    elif fs.kind == "class":
        bad = [c for c in fs.classes if not 0 <= c < k]
        if bad:
            raise ConfigError(
                f"class {bad[0]} is outside [0, {k}) for dataset {dataset!r}; use a class index from 0 to {k - 1}"
            )
        forget = np.flatnonzero(np.isin(y, fs.classes))
        forget_classes = fs.classes
    elif fs.kind == "random":
        n_f = round(fs.fraction * n)  # type: ignore[operator]
        if n_f == 0:
            raise ConfigError(
                f"forget spec {fs.source!r} selects no sample of the {n} training images; raise the fraction"
            )
        if n_f >= n:
            raise ConfigError(f"forget spec {fs.source!r} selects the whole training set; lower the fraction")
        rng = np.random.default_rng(seed)
        forget = np.sort(rng.permutation(n)[:n_f])
    elif fs.kind == "poisoned":
        if manipulated is None or len(manipulated) == 0:
            raise ConfigError(
                f"forget spec {fs.source!r} needs manipulated training data: pass --manipulation (e.g. "
                "badnets:rate=0.05 or confusion:k=500,a=3,b=5), or a bundle from manipulations.apply"
            )
        pool = np.sort(np.asarray(manipulated, dtype=np.int64))
        n_f = round(fs.fraction * len(pool))  # type: ignore[operator]
        if n_f == 0:
            raise ConfigError(f"forget spec {fs.source!r} selects none of the {len(pool)} manipulated samples")
        forget = np.sort(np.random.default_rng([int(seed), 2]).permutation(pool)[:n_f]) if n_f < len(pool) else pool
    else:  # indices
        idx = np.asarray(fs.indices, dtype=np.int64)
        if len(np.unique(idx)) != len(idx):
            vals, counts = np.unique(idx, return_counts=True)
            dup = int(vals[counts > 1][0])
            raise ConfigError(f"forget indices contain duplicates (e.g. {dup}); list each training index once")
        out = idx[(idx < 0) | (idx >= n)]
        if len(out):
            raise ConfigError(
                f"forget index {int(out[0])} is outside the training set [0, {n}); indices refer to the training split"
            )
        forget = np.sort(idx)
    if len(forget) == 0 and fs.kind != "none":
        raise ConfigError(f"forget spec {fs.source!r} selects an empty forget set for dataset {dataset!r}")
    if len(forget) >= n:
        raise ConfigError(
            f"forget spec {fs.source!r} covers the whole training set ({n} images): nothing would "
            "remain to retrain on; forget fewer classes or samples"
        )
    mask = np.ones(n, dtype=bool)
    mask[forget] = False
    return Split(
        dataset,
        str(fs),
        int(seed),
        forget,
        np.flatnonzero(mask),
        np.arange(num_test),
        n,
        forget_classes,
        manipulation=manipulation,
    )


def split_for(bundle: Any, spec: str | ForgetSpec | None, seed: int = 0) -> Split:
    """`make_split` for a loaded `DatasetBundle` (a manipulated one provides the ``poisoned`` pool)."""
    desc = getattr(bundle, "manipulation", None) or {}
    return make_split(
        bundle.info.name,
        bundle.train.targets.numpy(),
        len(bundle.test),
        spec,
        seed,
        bundle.info.num_classes,
        manipulated=getattr(bundle, "manipulated", None),
        manipulation=f"{desc['spec']}@seed={desc['seed']}" if desc else "",
    )
