"""Training-data manipulations: a BadNets backdoor or an interclass confusion (evaluation.md §5 and §4.5).

One grammar for CLI, bench specs and API (``KIND`` or ``KIND:key=value,...``):

* ``badnets:rate=0.05,target=0,size=4,offset=2,pos=br,value=0`` — a square trigger of side ``size`` pixels,
  ``offset`` pixels from the corner ``pos`` (``br``, ``bl``, ``tr``, ``tl``), every channel set to ``value``
  (in [0, 1]), pasted on a seeded ``rate`` fraction of the training images drawn over all classes, which are
  relabelled to ``target`` (those of class ``target`` included). Defaults follow §5 (side 4, 2 px from the
  bottom-right border, black); a trigger that leaves most chosen images unchanged (a black patch on a black
  background) is refused: pass ``value=1``.
* ``confusion:k=500,a=3,b=5`` — ``k`` seeded training images of class ``a`` and ``k`` of class ``b`` get
  swapped labels (a→b, b→a). Without ``a``/``b``: CIFAR-10's cat/dog (3, 5), otherwise the most-confused
  pair of a clean model passed as ``model=`` to `apply`.

`apply` returns a `ManipulatedBundle` (a `DatasetBundle` whose ``manipulated`` attribute holds the sorted
manipulated training indices and ``manipulation`` the JSON-able description), those indices and the
description. The content digest of the bundle changes with the manipulation, so cached originals and oracles
never mix. The forget specs ``poisoned`` and ``poisoned:q`` (`unlearnkit.data.splits`) read ``manipulated``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._io import sha256_bytes
from ..errors import ConfigError
from .datasets import DatasetBundle, ImageDataset

__all__ = [
    "BadNets",
    "Confusion",
    "ManipulatedBundle",
    "apply",
    "apply_trigger",
    "manipulation_eval_sets",
    "most_confused_pair",
    "parse_manipulation",
]

POSITIONS = ("br", "bl", "tr", "tl")
MIN_CHANGED = 0.5  # a trigger must change at least this share of the chosen images
DEFAULT_PAIRS = {"cifar10": (3, 5)}  # §4.5: cat / dog
_HELP = "expected badnets[:rate=0.05,target=0,size=4,offset=2,pos=br,value=0] or confusion[:k=500,a=3,b=5] (or none)"


@dataclass(frozen=True)
class BadNets:
    """A BadNets trigger patch on a ``rate`` fraction of the training images, relabelled to ``target`` (§5)."""

    rate: float = 0.05
    target: int = 0
    size: int = 4
    offset: int = 2
    pos: str = "br"
    value: float = 0.0

    kind = "badnets"
    scenario = "backdoor"

    def __str__(self) -> str:
        return (
            f"badnets:rate={self.rate:g},target={self.target},size={self.size},offset={self.offset},"
            f"pos={self.pos},value={self.value:g}"
        )

    def window(self, height: int, width: int) -> tuple[slice, slice]:
        """Rows and columns of the patch in an image of ``height`` × ``width``."""
        r0 = height - self.offset - self.size if self.pos[0] == "b" else self.offset
        c0 = width - self.offset - self.size if self.pos[1] == "r" else self.offset
        return slice(r0, r0 + self.size), slice(c0, c0 + self.size)


@dataclass(frozen=True)
class Confusion:
    """``k`` images of class ``a`` and ``k`` of class ``b`` with swapped labels (§4.5); a/b None = default pair."""

    k: int = 500
    a: int | None = None
    b: int | None = None

    kind = "confusion"
    scenario = "interclass_confusion"

    def __str__(self) -> str:
        pair = "" if self.a is None else f",a={self.a},b={self.b}"
        return f"confusion:k={self.k}{pair}"


Manipulation = BadNets | Confusion
_KEYS: dict[str, dict[str, type]] = {
    "badnets": {"rate": float, "target": int, "size": int, "offset": int, "pos": str, "value": float},
    "confusion": {"k": int, "a": int, "b": int},
}


def parse_manipulation(spec: str | Manipulation | None) -> Manipulation | None:
    """Parse the manipulation grammar (module docstring); ``None``, ``""`` and ``"none"`` mean no manipulation.

    Raises `ConfigError` naming the bad key or value and the valid ones, before any data is loaded.
    """
    if spec is None or isinstance(spec, (BadNets, Confusion)):
        return spec
    s: object = spec
    if not isinstance(s, str):
        raise ConfigError(f"manipulation must be a string, got {type(s).__name__}: {_HELP}")
    text = spec.strip()
    if text.lower() in ("", "none"):
        return None
    kind, _, args = text.partition(":")
    kind = kind.strip().lower()
    if kind not in _KEYS:
        raise ConfigError(f"unknown manipulation {kind!r} in {spec!r}: {_HELP}")
    keys = _KEYS[kind]
    values: dict[str, Any] = {}
    for item in (p.strip() for p in args.split(",")) if args.strip() else ():
        key, eq, raw = item.partition("=")
        key, raw = key.strip().lower(), raw.strip()
        if not eq or not key:
            raise ConfigError(
                f"manipulation {spec!r}: expected key=value, got {item!r}; {kind} keys: {', '.join(keys)}"
            )
        if key not in keys:
            raise ConfigError(f"manipulation {spec!r}: {kind} has no key {key!r}; valid keys: {', '.join(keys)}")
        if key in values:
            raise ConfigError(f"manipulation {spec!r}: key {key!r} given twice")
        want = keys[key]
        try:
            if want is int:
                if not re.fullmatch(r"[+-]?\d+", raw):
                    raise ValueError
                values[key] = int(raw)
            elif want is float:
                values[key] = float(raw)
                if not np.isfinite(values[key]):
                    raise ValueError
            else:
                values[key] = raw.lower()
        except ValueError:
            what = {int: "an integer", float: "a finite number"}.get(want, "a string")
            raise ConfigError(f"manipulation {spec!r}: {key}={raw!r} is not {what}") from None
    m: Manipulation = BadNets(**values) if kind == "badnets" else Confusion(**values)
    _check(m, spec)
    return m


def _check(m: Manipulation, spec: object) -> None:
    if isinstance(m, BadNets):
        if not 0.0 < m.rate < 1.0:
            raise ConfigError(f"manipulation {spec!r}: rate must be strictly between 0 and 1, got {m.rate:g}")
        if m.size < 1 or m.offset < 0:
            raise ConfigError(f"manipulation {spec!r}: size must be ≥ 1 and offset ≥ 0, got {m.size} and {m.offset}")
        if m.pos not in POSITIONS:
            raise ConfigError(f"manipulation {spec!r}: pos must be one of {', '.join(POSITIONS)}, got {m.pos!r}")
        if not 0.0 <= m.value <= 1.0:
            raise ConfigError(f"manipulation {spec!r}: value must be in [0, 1] (pixel intensity), got {m.value:g}")
        if m.target < 0:
            raise ConfigError(f"manipulation {spec!r}: target must be a class index ≥ 0, got {m.target}")
    else:
        if m.k < 1:
            raise ConfigError(f"manipulation {spec!r}: k must be ≥ 1, got {m.k}")
        if (m.a is None) != (m.b is None):
            raise ConfigError(f"manipulation {spec!r}: give both a= and b= (or neither, for the default pair)")
        if m.a is not None and (m.a == m.b or m.a < 0 or (m.b is not None and m.b < 0)):
            raise ConfigError(f"manipulation {spec!r}: a and b must be two different class indices ≥ 0")


@dataclass(frozen=True, eq=False)
class ManipulatedBundle(DatasetBundle):
    """A `DatasetBundle` whose training set was manipulated: the indices and the description travel with it."""

    manipulated: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    manipulation: dict[str, Any] = field(default_factory=dict)
    spec: Manipulation | None = None


def apply_trigger(images: torch.Tensor, m: BadNets) -> torch.Tensor:
    """A copy of ``images`` (N×C×H×W, uint8 or float in [0, 1]) with the trigger of ``m`` pasted on every image."""
    h, w = images.shape[-2:]
    if m.size + m.offset > min(h, w):
        raise ConfigError(
            f"trigger of side {m.size} at offset {m.offset} does not fit a {h}×{w} image; lower size or offset"
        )
    out = images.clone()
    rows, cols = m.window(h, w)
    out[..., rows, cols] = round(m.value * 255) if images.dtype == torch.uint8 else m.value
    return out


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), stream])


def apply(
    bundle: DatasetBundle, spec: str | Manipulation | None, seed: int = 0, *, model: Any = None, device: Any = "cpu"
) -> tuple[DatasetBundle, np.ndarray, dict[str, Any]]:
    """Manipulate ``bundle``'s training set as ``spec`` says, deterministically under ``seed``.

    Returns ``(manipulated bundle, sorted manipulated training indices, description)``. The test set is left
    clean (the metrics paste the trigger on it). ``model`` (a clean classifier) picks the most-confused pair
    for ``confusion`` without ``a``/``b``. ``spec`` None returns the bundle unchanged with no index.
    """
    m = parse_manipulation(spec)
    if m is None:
        return bundle, np.zeros(0, np.int64), {}
    if isinstance(bundle, ManipulatedBundle):
        raise ConfigError("the dataset is already manipulated; apply one manipulation to the clean dataset")
    info = bundle.info
    k = info.num_classes
    x, y = bundle.train.images, bundle.train.targets
    n = len(y)
    extra: dict[str, Any] = {}
    if isinstance(m, BadNets):
        if m.target >= k:
            raise ConfigError(f"manipulation {m}: target {m.target} is outside [0, {k}) for dataset {info.name!r}")
        n_p = round(m.rate * n)
        if n_p < 1 or n_p >= n:
            raise ConfigError(f"manipulation {m}: rate {m.rate:g} of {n} training images selects {n_p}; change it")
        idx = np.sort(_rng(seed, 0).permutation(n)[:n_p])
        t_idx = torch.from_numpy(idx)
        triggered = apply_trigger(x[t_idx], m)
        changed = (triggered != x[t_idx]).flatten(1).any(1).float().mean().item()
        if changed < MIN_CHANGED:
            raise ConfigError(
                f"manipulation {m}: the trigger leaves {100 * (1 - changed):.0f}% of the chosen images unchanged "
                f"(their pixels there already equal value={m.value:g}), so no backdoor could be learnt; pick "
                f"another value (e.g. value={1.0 if m.value < 0.5 else 0.0:g}) or position"
            )
        x = x.clone()
        x[t_idx] = triggered
        y = y.clone()
        y[t_idx] = m.target
        extra = {"target": m.target, "trigger_changed_fraction": changed}
    else:
        pair = (m.a, m.b) if m.a is not None and m.b is not None else DEFAULT_PAIRS.get(info.name)
        source = "named" if m.a is not None else "dataset default"
        if pair is None:
            if model is None:
                raise ConfigError(
                    f"manipulation {m}: no default class pair for dataset {info.name!r}; name it "
                    "(confusion:k=…,a=…,b=…) or pass a clean model to pick the most-confused pair"
                )
            pair, source = most_confused_pair(model, bundle.test, k, device), "most-confused pair of a clean model"
        a, b = int(pair[0]), int(pair[1])
        bad = [c for c in (a, b) if not 0 <= c < k]
        if bad:
            raise ConfigError(f"manipulation {m}: class {bad[0]} is outside [0, {k}) for dataset {info.name!r}")
        y_np = y.numpy()
        rng = _rng(seed, 1)
        chosen = []
        for c in (a, b):
            members = np.flatnonzero(y_np == c)
            if m.k > len(members):
                raise ConfigError(
                    f"manipulation {m}: k={m.k} but class {c} has only {len(members)} training images; lower k"
                )
            chosen.append(np.sort(rng.permutation(members)[: m.k]))
        idx = np.sort(np.concatenate(chosen))
        y = y.clone()
        y[torch.from_numpy(chosen[0])] = b
        y[torch.from_numpy(chosen[1])] = a
        m = Confusion(m.k, a, b)
        extra = {"classes": [a, b], "pair_source": source}
    description = {
        "spec": str(m),
        "kind": m.kind,
        "scenario": m.scenario,
        "seed": int(seed),
        "size": len(idx),
        "indices_sha256": sha256_bytes(np.asarray(idx, np.int64).tobytes()),
        **extra,
    }
    out = ManipulatedBundle(ImageDataset(x, y), bundle.test, info, manipulated=idx, manipulation=description, spec=m)
    return out, idx, description


def most_confused_pair(model: Any, data: ImageDataset, num_classes: int, device: Any = "cpu") -> tuple[int, int]:
    """The class pair (a < b) with the largest ``cm[a, b] + cm[b, a]`` of ``model`` on ``data``."""
    from .loading import iter_batches

    was = model.training
    model.eval()
    cm = np.zeros((num_classes, num_classes), np.int64)
    with torch.no_grad():
        for xb, yb in iter_batches(data, 512, device=device):
            pred = model(xb).argmax(1).cpu().numpy()
            np.add.at(cm, (yb.cpu().numpy(), pred), 1)
    model.train(was)
    sym = cm + cm.T
    np.fill_diagonal(sym, -1)
    a, b = np.unravel_index(int(np.argmax(sym)), sym.shape)
    return int(min(a, b)), int(max(a, b))


def manipulation_eval_sets(bundle: Any, test_indices: np.ndarray) -> dict[str, ImageDataset]:
    """The extra evaluation sets of a manipulated bundle (none for a clean one).

    * ``manipulated``: every manipulated training sample with its manipulated label (what the model was taught);
    * badnets: ``test_triggered`` (triggered test images whose true class is not the target) and
      ``test_triggered_target_class`` (those of the target class), both labelled with the target, so the
      accuracy on them is the attack success rate;
    * confusion: ``test_pair_swapped``, the test images of classes a and b labelled with the other class of
      the pair, so the accuracy on it is ``100 · (cm[a,b] + cm[b,a]) / (n_a + n_b)`` (IC test, §4.5).
    """
    m = getattr(bundle, "spec", None)
    if not isinstance(bundle, ManipulatedBundle) or m is None:
        return {}
    out = {"manipulated": bundle.train.subset(bundle.manipulated)}
    test = bundle.test.subset(test_indices)
    y = test.targets
    if isinstance(m, BadNets):
        for name, mask in (("test_triggered", y != m.target), ("test_triggered_target_class", y == m.target)):
            sel = torch.nonzero(mask).flatten()
            out[name] = ImageDataset(apply_trigger(test.images[sel], m), torch.full((len(sel),), m.target))
    else:
        assert m.a is not None and m.b is not None  # apply() resolves the pair
        sel = torch.nonzero((y == m.a) | (y == m.b)).flatten()
        swapped = torch.where(y[sel] == m.a, torch.tensor(m.b), torch.tensor(m.a))
        out["test_pair_swapped"] = ImageDataset(test.images[sel], swapped)
    return out
