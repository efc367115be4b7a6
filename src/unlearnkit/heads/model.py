"""`HeadModel`: a frozen backbone and a head (`RidgeHead`, exact, or `CertifiedHead`, (ε, δ)-certified) whose
deletions come with a guarantee, and `train_head`, which builds one.

* The backbone is any torch module mapping images to features (one of our models maps through its
  ``forward_features``); it is frozen (eval mode, no gradients) and never changed by a deletion.
* The head sees `embed`-ded features x̃ = [f/‖f‖, 1]/√2 (float64). Features are computed once per training set and
  can be cached (`extract_features`, namespace ``head_features``).
* ``trained`` marks the training-set indices the head was trained on (the deletable data) and ``deleted`` those
  deleted since; both are buffers, so they are part of the checkpoint and of `model_sha256`.
* Where the guarantee holds (`Provenance.scope`): it covers what the deletable data influenced. A backbone trained
  on other data (a public split, a public pre-training) never saw it: the guarantee covers the **whole model**. A
  backbone trained on the same data still carries it: the guarantee covers the **head only**. Every report says
  which.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from ..errors import ConfigError, IncompatibleError
from .certified import CertifiedHead, check_privacy
from .linear import embed
from .ridge import RidgeHead

HeadKind = Literal["ridge", "certified"]
TrainedOn = Literal["public", "same"]
HEAD_KINDS: tuple[str, ...] = ("ridge", "certified")
#: What the guarantee covers, by what the backbone was trained on.
SCOPES = {
    "public": (
        "whole model",
        "the backbone was trained on other (public) data and never saw the deletable data",
    ),
    "same": (
        "head only",
        "the backbone was trained on the same data and still carries what it learnt from the deleted points",
    ),
}
#: Defaults of the heads' options (`train_head` and ``--head-arg``).
DEFAULTS: dict[str, dict[str, float]] = {
    "ridge": {"lam": 1.0},
    "certified": {"lam": 1e-3, "sigma": 10.0, "eps": 1.0, "delta": 1e-5},
}


@dataclass(frozen=True)
class Provenance:
    """Where the backbone comes from: its weights' SHA-256, what it was trained on, and how to rebuild it."""

    sha256: str
    trained_on: TrainedOn
    source: str = ""
    config: dict[str, Any] | None = None  # unlearnkit model config (None: a user module, rebuilt by a factory)
    wrapper: Literal["features", "module"] = "module"  # features: the model's forward_features
    public_split: dict[str, Any] | None = None  # the split whose retain part trained it (spec, seed, sha256)

    def __post_init__(self) -> None:
        if self.trained_on not in SCOPES:
            raise ConfigError(
                f"what the backbone was trained on must be 'public' (other data: a public split or pre-training) "
                f"or 'same' (the data the head trains on), got {self.trained_on!r}"
            )

    @property
    def scope(self) -> str:
        return SCOPES[self.trained_on][0]

    @property
    def scope_detail(self) -> str:
        return SCOPES[self.trained_on][1]


@dataclass(frozen=True)
class HeadSpec:
    """Everything besides tensors that defines a head model (stored as JSON in the checkpoint)."""

    kind: HeadKind
    num_classes: int
    dim: int  # D = feature dimension + 1
    num_train: int  # size of the training-index space (the ``trained``/``deleted`` masks)
    backbone: dict[str, Any]  # asdict(Provenance)
    lam: float
    sigma: float | None = None
    eps: float | None = None
    delta: float | None = None
    noise_seed: int | None = None  # None: b is drawn from OS entropy (the only private choice)
    b_commitment: str = ""
    trainings: int = 1
    dataset: str | None = None
    train_seconds: float | None = None

    def provenance(self) -> Provenance:
        return Provenance(**self.backbone)

    @property
    def guarantee(self) -> str:
        if self.kind == "ridge":
            return "exact"
        return f"({self.eps:g}, {self.delta:g})-certified"


class FeatureBackbone(nn.Module):
    """One of our classifiers used as a backbone: ``forward`` is its ``forward_features``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)  # type: ignore[operator]


def as_backbone(module: nn.Module) -> tuple[nn.Module, str]:
    """(frozen backbone, wrapper): our `Classifier` maps through ``forward_features``, any other module as is."""
    from ..models import Classifier

    out: nn.Module
    if isinstance(module, FeatureBackbone):
        out, wrapper = module, "features"
    elif isinstance(module, Classifier):
        out, wrapper = FeatureBackbone(module), "features"
    else:
        out, wrapper = module, "module"
    out.eval()
    for p in out.parameters():
        p.requires_grad_(False)
    return out, wrapper


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset: Dataset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    cache: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedded features n × D float64 on CPU, labels) of ``dataset`` through the frozen ``backbone``.

    ``cache`` reads and writes the raw features in the verified cache (namespace ``head_features``), keyed by the
    backbone's weights and the dataset's content; it holds features of training images as the dataset holds the
    images (``unlearnkit cache clear --namespace head_features --yes`` removes them).
    """
    from ..data.loading import iter_batches
    from ..device import resolve_device

    store = key = None
    if cache:
        found = _feature_cache(backbone, dataset)
        if found is not None:
            store, key, hit = found
            if hit is not None:
                return embed(hit["features"]), hit["labels"].long()
    dev = resolve_device(device)
    was = backbone.training
    home = next((t.device for t in backbone.state_dict().values()), torch.device("cpu"))
    backbone.eval().to(dev)
    feats, labels = [], []
    for x, y in iter_batches(dataset, batch_size, device=dev):
        feats.append(backbone(x).reshape(len(x), -1).float().cpu())
        labels.append(y.cpu())
    backbone.train(was).to(home)  # a head model's backbone stays where its head is
    raw = torch.cat(feats) if feats else torch.zeros(0, 0)
    lab = torch.cat(labels).long() if labels else torch.zeros(0, dtype=torch.long)
    if store is not None and key is not None and len(lab):
        store.save(key, {"features": raw, "labels": lab})
    return embed(raw), lab


def _feature_cache(backbone: nn.Module, dataset: Dataset) -> tuple[Any, str, dict[str, torch.Tensor] | None] | None:
    """(store, key, cached raw features or None) of ``dataset`` through ``backbone``; None when caching is off."""
    from ..cache import TensorCache, dataset_digest, model_sha256
    from ..settings import model_cache_default

    if not model_cache_default():
        return None
    store = TensorCache("head_features")
    key = store.key(backbone=model_sha256(backbone), data=dataset_digest(dataset))
    return store, key, store.load(key)


def _subset(dataset: Dataset, rows: torch.Tensor) -> Dataset:
    sub = getattr(dataset, "subset", None)
    return sub(rows.numpy()) if callable(sub) else torch.utils.data.Subset(dataset, rows.tolist())


@dataclass
class HeadDeletion:
    """What one deletion did to a head model: the guarantee, where it holds, the cost and (certified) the budget."""

    kind: str
    guarantee: str
    scope: str
    scope_detail: str
    deleted: int
    remaining: int
    seconds: float
    lam: float
    feature_seconds: float = 0.0
    update: str = ""  # ridge: woodbury | refactor | class; certified: newton | retrain
    hessian: str = ""  # certified: stored (read only the deleted points) | data pass (read the remaining ones)
    refresh_seconds: float = 0.0  # certified: the Hessian recomputed at the new weights (remaining points only)
    certificate: dict[str, Any] = field(default_factory=dict)  # certified: σ, ε, δ, c, bounds, budget, retrain
    #: the key of the ledger record this report is stored under
    record_key = "head"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class HeadModel(nn.Module):
    """A frozen backbone and a head; ``forward`` returns the head's scores (ridge) or log-odds (certified)."""

    trained: torch.Tensor
    deleted: torch.Tensor

    def __init__(
        self,
        backbone: nn.Module,
        head: RidgeHead | CertifiedHead,
        spec: HeadSpec,
        trained: torch.Tensor | None = None,
        deleted: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.backbone, _ = as_backbone(backbone)
        self.head = head
        self.spec = spec
        n = spec.num_train
        self.register_buffer("trained", torch.ones(n, dtype=torch.bool) if trained is None else trained.bool().clone())
        self.register_buffer("deleted", torch.zeros(n, dtype=torch.bool) if deleted is None else deleted.bool().clone())
        if isinstance(head, CertifiedHead) and spec.b_commitment:
            head.b_commitment = spec.b_commitment
        self.last_deletion: HeadDeletion | None = None

    # --- inference ---------------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return embed(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x)).float()

    def train(self, mode: bool = True) -> HeadModel:
        """The backbone stays in eval mode (frozen BatchNorm statistics) whatever ``mode``."""
        super().train(mode)
        self.backbone.eval()
        return self

    def outcome_parameters(self) -> Iterable[tuple[str, torch.Tensor]]:
        """The weights a deletion edits (the head's), for the outcome check's no-op rule."""
        return [("head.weight", self.head.weight)]

    # --- bookkeeping -------------------------------------------------------------------------------------
    @property
    def provenance(self) -> Provenance:
        return self.spec.provenance()

    def summary(self) -> dict[str, Any]:
        """Kind, guarantee, where it holds, the backbone's provenance and (certified) the noise commitment."""
        p = self.provenance
        out: dict[str, Any] = {
            "head": self.spec.kind,
            "guarantee": self.spec.guarantee,
            "scope": p.scope,
            "scope_detail": p.scope_detail,
            "backbone": {"sha256": p.sha256, "trained_on": p.trained_on, "source": p.source},
            "lam": self.spec.lam,
            "trained_on_indices": int(self.trained.sum()),
            "deleted": int(self.deleted.sum()),
        }
        if self.spec.kind == "certified":
            head = self.head
            assert isinstance(head, CertifiedHead)
            bud = head.budget
            out.update(
                sigma=bud.sigma,
                eps=bud.eps,
                delta=bud.delta,
                budget=bud.limit,
                bound_accumulated=bud.total(head.bound),
                b_commitment=head.b_commitment,
                noise="seeded (not private: for tests)" if self.spec.noise_seed is not None else "OS entropy",
            )
        return out

    def remaining(self) -> torch.Tensor:
        """Sorted training indices the head currently stands on (trained and not deleted)."""
        return torch.nonzero(self.trained.cpu() & ~self.deleted.cpu()).flatten()

    def check_indices(self, indices: Iterable[int]) -> list[int]:
        """Sorted unique indices, refused (`IncompatibleError`) when out of range, not deletable or deleted."""
        idx = sorted({int(i) for i in indices})
        n = self.spec.num_train
        bad = [i for i in idx if not 0 <= i < n]
        if bad:
            raise IncompatibleError(f"training indices out of range [0, {n}): {bad[:5]}{'…' if len(bad) > 5 else ''}")
        at = torch.as_tensor(idx, dtype=torch.long)  # one vectorised lookup per mask (a request may be a class)
        outside = at[~self.trained.cpu()[at]].tolist()
        if outside:
            raise IncompatibleError(
                f"training indices {outside[:5]}{'…' if len(outside) > 5 else ''} are not in the head's deletable "
                "data (they are public: the split that trained the backbone); a head model deletes only what its "
                "head was trained on — request deletable indices, or retrain the backbone without them"
            )
        gone = at[self.deleted.cpu()[at]].tolist()
        if gone:
            raise IncompatibleError(f"training indices already deleted: {gone[:5]}{'…' if len(gone) > 5 else ''}")
        if not idx:
            raise IncompatibleError("the deletion request selects no training index")
        return idx

    def _noise(self, training: int) -> torch.Tensor:
        """b for the ``training``-th training (1: the first): OS entropy, or (tests) derived from ``noise_seed``."""
        head = self.head
        assert isinstance(head, CertifiedHead)
        seed = secrets.randbits(63) if self.spec.noise_seed is None else _derive(self.spec.noise_seed, training)
        return head.draw_noise(torch.Generator().manual_seed(seed))

    # --- deletion ----------------------------------------------------------------------------------------
    def delete(
        self,
        train_set: Dataset,
        indices: Iterable[int],
        *,
        device: str | torch.device = "cpu",
        features: tuple[torch.Tensor, torch.Tensor] | None = None,
        refresh: bool = True,
    ) -> HeadDeletion:
        """Delete training ``indices`` (of ``train_set``, the set the head's indices refer to); in place.

        ``features`` (embedded features and labels of the whole ``train_set``, e.g. from `extract_features`)
        skips the backbone pass. A ridge head reads only the deleted points. A certified head whose stored Hessian
        is current also reads only the deleted points; the remaining ones (the feature cache filled at training,
        else a backbone pass) are read when its Hessian is not current or the budget forces a retrain, and, with
        ``refresh``, after the Newton step to bring the Hessian to the new weights (``refresh_seconds``), so that
        the next deletion reads only its own points again.
        """
        if len(train_set) != self.spec.num_train:  # type: ignore[arg-type]
            raise IncompatibleError(
                f"the training set has {len(train_set)} points, the head model indexes {self.spec.num_train}"  # type: ignore[arg-type]
            )
        idx = self.check_indices(indices)
        t0 = time.perf_counter()
        gone = torch.as_tensor(idx)
        keep = self.remaining()
        keep = keep[~torch.isin(keep, gone)]
        if features is not None:
            x, y = features[0][gone], features[1][gone]
        else:
            x, y = extract_features(self.backbone, _subset(train_set, gone), device=device)

        def load() -> tuple[torch.Tensor, torch.Tensor]:
            if features is not None:
                return features[0][keep], features[1][keep]
            trained = self.trained.cpu()
            found = _feature_cache(self.backbone, _subset(train_set, torch.nonzero(trained).flatten()))
            if found is not None and found[2] is not None:  # the training features: keep's rows among them
                pos = torch.cumsum(trained.long(), 0) - 1
                return embed(found[2]["features"][pos[keep]]), found[2]["labels"][pos[keep]].long()
            return extract_features(self.backbone, _subset(train_set, keep), device=device)

        seconds = time.perf_counter() - t0
        return self.delete_embedded(idx, x, y, remaining=load, refresh=refresh, feature_seconds=seconds)

    def delete_embedded(
        self,
        indices: list[int],
        x_del: torch.Tensor,
        y_del: torch.Tensor,
        x_rem: torch.Tensor | None = None,
        y_rem: torch.Tensor | None = None,
        *,
        remaining: Callable[[], tuple[torch.Tensor, torch.Tensor]] | None = None,
        refresh: bool = False,
        feature_seconds: float = 0.0,
    ) -> HeadDeletion:
        """The deletion on embedded features: ``x_del``/``y_del`` of ``indices`` (checked by `check_indices`).

        A certified head may need every remaining point (`remaining` minus ``indices``, in that order): given as
        ``x_rem``/``y_rem`` or loaded on demand by ``remaining()``; it reads them only when its stored Hessian is
        not current, when the budget forces a retrain, or (``refresh``) to recompute the Hessian at the new weights
        after the Newton step. Time spent loading them counts in ``feature_seconds``, the refresh in
        ``refresh_seconds``; ``seconds`` is the head update alone."""
        idx = self.check_indices(indices)
        if len(x_del) != len(idx):
            raise IncompatibleError(f"{len(x_del)} feature rows for {len(idx)} deleted indices")
        t0 = time.perf_counter()
        cert: dict[str, Any] = {}
        head = self.head
        loaded: list[tuple[torch.Tensor, torch.Tensor]] = []
        load_s = refresh_s = 0.0

        def load() -> tuple[torch.Tensor, torch.Tensor]:
            nonlocal load_s
            if not loaded:
                t = time.perf_counter()
                if x_rem is not None and y_rem is not None:
                    loaded.append((x_rem.cpu(), y_rem.cpu()))
                elif remaining is not None:
                    got = remaining()
                    loaded.append((got[0].cpu(), got[1].cpu()))
                else:
                    raise IncompatibleError(
                        "this certified removal needs the remaining points' features (x_rem/y_rem or remaining): its "
                        "stored Hessian is not current, or the budget forces a retrain"
                    )
                load_s += time.perf_counter() - t
            return loaded[0]

        if isinstance(head, RidgeHead):
            update = str(head.remove(x_del.cpu(), y_del.cpu())["update"])
        else:
            fresh = self.spec.trainings + 1
            cert = head.remove(x_del.cpu(), y_del.cpu(), lambda: self._noise(fresh), remaining=load)
            if cert["retrained"]:
                self.spec = replace(self.spec, trainings=self.spec.trainings + 1, b_commitment=head.b_commitment)
            elif refresh:
                x_r = load()[0]
                t = time.perf_counter()
                head.refresh(x_r)
                refresh_s = time.perf_counter() - t
            update = "retrain" if cert["retrained"] else "newton"
            bud = head.budget
            cert.update(sigma=bud.sigma, eps=bud.eps, delta=bud.delta, b_commitment=head.b_commitment)
            cert["trainings"] = self.spec.trainings
        self.deleted[torch.as_tensor(idx, dtype=torch.long, device=self.deleted.device)] = True
        p = self.provenance
        report = HeadDeletion(
            kind=self.spec.kind,
            guarantee=self.spec.guarantee if update != "retrain" else "exact (retrained with a fresh b)",
            scope=p.scope,
            scope_detail=p.scope_detail,
            deleted=len(idx),
            remaining=int(head.count),
            seconds=time.perf_counter() - t0 - load_s - refresh_s,
            lam=self.spec.lam,
            feature_seconds=feature_seconds + load_s,
            update=update,
            hessian=str(cert.get("hessian", "")),
            refresh_seconds=refresh_s,
            certificate=cert,
        )
        self.last_deletion = report
        return report


def _derive(seed: int, n: int) -> int:
    return (int(seed) * 1_000_003 + 7919 * int(n)) % (2**63)


def build_head(kind: str, num_classes: int, dim: int, options: dict[str, Any]) -> RidgeHead | CertifiedHead:
    """An untrained head of ``kind`` with ``options`` (lam; certified: sigma, eps, delta) over `DEFAULTS`."""
    if kind not in DEFAULTS:
        raise ConfigError(f"unknown head {kind!r}; use one of {', '.join(HEAD_KINDS)} (--head)")
    allowed = set(DEFAULTS[kind]) | ({"noise_seed"} if kind == "certified" else set())
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ConfigError(
            f"the {kind} head has no option {', '.join(unknown)}; its options: {', '.join(sorted(allowed))} "
            "(--head-arg KEY=VALUE)"
        )
    o = {**DEFAULTS[kind], **{k: v for k, v in options.items() if k != "noise_seed"}}
    if kind == "ridge":
        return RidgeHead(num_classes, dim, lam=float(o["lam"]))
    check_privacy(o["sigma"], o["eps"], o["delta"], o["lam"])
    return CertifiedHead(num_classes, dim, lam=o["lam"], sigma=o["sigma"], eps=o["eps"], delta=o["delta"])


def train_head(
    backbone: nn.Module,
    train_set: Dataset,
    *,
    head: str = "ridge",
    trained_on: str = "same",
    indices: Iterable[int] | None = None,
    num_classes: int | None = None,
    source: str = "",
    public_split: dict[str, Any] | None = None,
    dataset: str | None = None,
    device: str | torch.device = "cpu",
    cache: bool = True,
    features: tuple[torch.Tensor, torch.Tensor] | None = None,
    **options: Any,
) -> HeadModel:
    """Freeze ``backbone`` and train a ``head`` (``ridge`` or ``certified``) on ``train_set[indices]``.

    Args:
        backbone: any module mapping images to features; one of our classifiers maps through
            ``forward_features``.
        trained_on: what the backbone was trained on: ``public`` (other data; the guarantee covers the whole model)
            or ``same`` (the head's data; the guarantee covers the head only). There is no guessing default for a
            module you pass: ``same`` is the conservative one.
        indices: the training indices the head trains on (the deletable data; default: all of ``train_set``).
        options: ``lam`` (both heads), ``sigma``, ``eps``, ``delta`` (certified; defaults in `DEFAULTS`) and
            ``noise_seed`` (certified, tests only: b drawn from a seed is not private; default OS entropy).
        features: embedded features and labels of the whole ``train_set`` (skips the backbone pass).
    """
    from ..cache import model_sha256
    from ..models import model_config

    if head not in HEAD_KINDS:
        raise ConfigError(f"unknown head {head!r}; use one of {', '.join(HEAD_KINDS)} (--head)")
    noise_seed = options.pop("noise_seed", None)
    if noise_seed is not None and head != "certified":
        raise ConfigError("noise_seed is an option of the certified head only (its noise b); drop it")
    if noise_seed is not None and (isinstance(noise_seed, bool) or not isinstance(noise_seed, int)):
        raise ConfigError(f"noise_seed must be an integer or None, got {noise_seed!r}")
    n = len(train_set)  # type: ignore[arg-type]
    sel = torch.arange(n) if indices is None else torch.as_tensor(sorted({int(i) for i in indices}), dtype=torch.long)
    if len(sel) == 0 or int(sel.min()) < 0 or int(sel.max()) >= n:
        raise ConfigError(f"the head's training indices must be a non-empty subset of [0, {n})")
    bb, wrapper = as_backbone(copy.deepcopy(backbone))  # the caller's module stays as it was
    inner = bb.model if isinstance(bb, FeatureBackbone) else bb
    prov = Provenance(
        sha256=model_sha256(bb),
        trained_on=trained_on,  # type: ignore[arg-type]
        source=source,
        config=model_config(inner),
        wrapper=wrapper,  # type: ignore[arg-type]
        public_split=public_split,
    )
    t0 = time.perf_counter()
    if features is None:
        sub = getattr(train_set, "subset", None)
        ds = sub(sel.numpy()) if callable(sub) else torch.utils.data.Subset(train_set, sel.tolist())
        x, y = extract_features(bb, ds, device=device, cache=cache)
    else:
        x, y = features[0][sel], features[1][sel]
    k = int(num_classes) if num_classes else int(y.max()) + 1
    h = build_head(head, k, x.shape[1], options)
    spec = HeadSpec(
        kind=head,  # type: ignore[arg-type]
        num_classes=k,
        dim=x.shape[1],
        num_train=n,
        backbone=asdict(prov),
        lam=h.lam,
        sigma=h.budget.sigma if isinstance(h, CertifiedHead) else None,
        eps=h.budget.eps if isinstance(h, CertifiedHead) else None,
        delta=h.budget.delta if isinstance(h, CertifiedHead) else None,
        noise_seed=noise_seed,
        dataset=dataset,
    )
    trained = torch.zeros(n, dtype=torch.bool)
    trained[sel] = True
    model = HeadModel(bb, h, spec, trained)
    if isinstance(h, RidgeHead):
        h.fit(x, y)
    else:
        h.fit(x, y, model._noise(1))
        model.spec = replace(model.spec, b_commitment=h.b_commitment)
    model.spec = replace(model.spec, train_seconds=time.perf_counter() - t0)
    return model.eval()


__all__ = [
    "DEFAULTS",
    "HEAD_KINDS",
    "SCOPES",
    "FeatureBackbone",
    "HeadDeletion",
    "HeadModel",
    "HeadSpec",
    "Provenance",
    "as_backbone",
    "build_head",
    "extract_features",
    "train_head",
]
