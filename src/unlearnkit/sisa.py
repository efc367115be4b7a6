"""SISA: sharded, isolated, sliced, aggregated training — exact unlearning by construction (methods.md §13.1).

The training set is split at random into ``S`` disjoint shards and every shard into ``R`` slices. Constituent
model ``s`` trains in ``R`` stages over the cumulative slices ``1..r`` and is checkpointed after each stage.
Deleting a point retrains only its shard, from the checkpoint taken before its slice; predictions aggregate the
``S`` models.

* `train_sisa` trains a `SISAEnsemble`; `SISAEnsemble.delete` (or `delete_indices`) removes training points and
  returns a `DeletionReport` (samples processed and wall time, against a full retrain).
* Stage checkpoints live in the verified, content-addressed `unlearnkit.cache.TensorCache` (namespace ``sisa``):
  the key of stage ``(s, r)`` covers the architecture, recipe, seed, shard, stage and the SHA-256 of the stage's
  data, so a deletion finds the checkpoint of every untouched stage and never one that saw a deleted point.
* Every stage trains with a seed derived from ``(seed, shard, stage)`` and every member starts from an
  initialisation seeded by ``(seed, shard)``: on the CPU, retraining from a checkpoint is bit-identical to
  training the ensemble from scratch on the reduced data with the same assignment (`train_sisa(...,
  assignment=ens.assignment(), deleted=...)`, which is also the oracle of `unlearnkit.sisa.oracle`).

Output convention: `SISAEnsemble` returns **log-probabilities** of the aggregate (so ``softmax(output)`` is the
aggregate distribution, ``argmax`` the prediction and ``cross_entropy(output, y)`` its NLL; every metric written
for logits reads it unchanged):

* ``aggregation="softmax"``: ``log(mean_s softmax(f_s(x)))``;
* ``aggregation="vote"`` (majority vote, the paper code's default): ``log((votes + ε) / (S + Cε))`` with
  ``ε = 1e-3``, finite everywhere; its argmax is the plurality class and ties go to the lowest class index.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .errors import CheckpointError, ConfigError, IncompatibleError
from .sisa_files import SISA_META_KEY, is_sisa_checkpoint, read_deleted_mask, save_sisa
from .sisa_schedule import (
    _derive_seed,
    check_stage_epochs,
    class_indices,
    min_epochs,
    partition,
    pinned_threads,
    stage_epochs,
)
from .training import Recipe

Aggregation = Literal["vote", "softmax"]
VOTE_EPS = 1e-3

#: Builds the training data of a stage from sorted training-set indices.
DataFor = Callable[[torch.Tensor], Dataset]


# ------------------------------------------------------------------------------------------------- helpers
def _subset(dataset: Dataset) -> DataFor:
    def data_for(idx: torch.Tensor) -> Dataset:
        sub = getattr(dataset, "subset", None)
        return sub(idx.numpy()) if callable(sub) else Subset(dataset, idx.tolist())

    return data_for


def _data_sha(ds: Dataset) -> str:
    from .cache import dataset_digest

    return dataset_digest(ds)


def _build_member(config: dict[str, Any] | Callable[[], nn.Module], seed: int) -> nn.Module:
    """A fresh member initialised under a private generator seeded by ``seed`` (no global RNG touched)."""
    from .models import create_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if callable(config):
            return config()
        c = config
        return create_model(
            c["name"], c["num_classes"], c["in_channels"], c["image_size"], c.get("mean"), c.get("std"), **c["kwargs"]
        )


# ------------------------------------------------------------------------------------------------- spec
@dataclass(frozen=True)
class SISASpec:
    """Everything besides weights and assignment that defines a SISA ensemble (stored in the checkpoint)."""

    shards: int
    slices: int
    recipe: dict[str, Any]
    seed: int
    aggregation: Aggregation
    member: dict[str, Any] | None  # the members' unlearnkit model config (None: built by a user factory)
    dataset: str | None = None
    train_seconds: float | None = None
    train_samples: int | None = None
    num_classes: int = 0
    #: CPU threads the ensemble was trained with (deletions and the oracle pin it); None: not recorded
    #: (checkpoints written before it was), then bit-identity holds only under the same thread count.
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.aggregation not in ("vote", "softmax"):
            raise ConfigError(f"aggregation must be 'vote' or 'softmax', got {self.aggregation!r}")

    def recipe_obj(self) -> Recipe:
        return Recipe(**self.recipe)


@dataclass
class DeletionReport:
    """Cost and effect of one deletion request on a `SISAEnsemble`.

    ``samples_processed`` counts sample-passes of the retrained stages (stage size × stage epochs);
    ``full_retrain_samples`` the same count for training every shard from scratch on the reduced data.
    ``wall_seconds`` is the measured time of the deletion; ``full_retrain_seconds`` the measured time of the
    ensemble's original training (the closest measured full retrain), when known.
    """

    indices: list[int]
    shards: dict[int, int]  # shard -> first retrained stage (1-based; 1 = from the initialisation)
    samples_processed: int
    full_retrain_samples: int
    wall_seconds: float
    full_retrain_seconds: float | None
    checkpoints_reused: int = 0
    missing_checkpoints: int = 0  # restart points not found in the cache (retrained from an earlier stage)
    threads: int | None = None  # CPU threads the retraining ran with (the ensemble's recorded count)

    @property
    def sample_fraction(self) -> float:
        return self.samples_processed / max(self.full_retrain_samples, 1)

    @property
    def wall_fraction(self) -> float | None:
        return None if not self.full_retrain_seconds else self.wall_seconds / self.full_retrain_seconds

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sample_fraction"] = self.sample_fraction
        d["wall_fraction"] = self.wall_fraction
        return d


# ------------------------------------------------------------------------------------------------- model
class SISAEnsemble(nn.Module):
    """``S`` constituent models and the (shard, slice) assignment of every training index.

    ``forward`` returns log-probabilities of the aggregate (see the module docstring). The assignment and the
    deleted-index mask are buffers, so they are part of the state dict, of `model_sha256` and of the checkpoint.
    """

    shard_of: torch.Tensor
    slice_of: torch.Tensor
    deleted: torch.Tensor

    def __init__(
        self,
        members: Sequence[nn.Module],
        shard_of: torch.Tensor,
        slice_of: torch.Tensor,
        spec: SISASpec,
        deleted: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        if len(members) != spec.shards:
            raise ConfigError(f"{len(members)} members for {spec.shards} shards")
        self.members = nn.ModuleList(members)
        self.register_buffer("shard_of", shard_of.long().clone())
        self.register_buffer("slice_of", slice_of.long().clone())
        d = torch.zeros(len(shard_of), dtype=torch.bool) if deleted is None else deleted.bool().clone()
        self.register_buffer("deleted", d)
        self.spec = spec
        self.last_deletion: DeletionReport | None = None

    # --- inference ---------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aggregate(torch.stack([m(x).float() for m in self.members]))

    def aggregate(self, outs: torch.Tensor, aggregation: Aggregation | None = None) -> torch.Tensor:
        """Log-probabilities of the aggregate of the members' logits ``outs`` (S × B × C), as `forward` does.

        ``aggregation`` overrides the ensemble's own (``spec.aggregation``), e.g. to score both ways from one
        forward pass of the members.
        """
        outs = outs.float()
        s, _, c = outs.shape
        if (aggregation or self.spec.aggregation) == "softmax":
            return torch.logsumexp(torch.log_softmax(outs, dim=-1), dim=0) - torch.log(torch.tensor(float(s)))
        votes = nn.functional.one_hot(outs.argmax(-1), c).sum(0).float()
        return torch.log((votes + VOTE_EPS) / (s + c * VOTE_EPS))

    # --- bookkeeping -------------------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        return len(self.shard_of)

    def assignment(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shard_of.cpu().clone(), self.slice_of.cpu().clone()

    def deleted_indices(self) -> list[int]:
        return torch.nonzero(self.deleted.cpu()).flatten().tolist()

    def training_indices(self, shard: int, stage: int | None = None) -> torch.Tensor:
        """Sorted training indices member ``shard`` trains on at ``stage`` (1-based; default: the last)."""
        stage = self.spec.slices if stage is None else stage
        sh, sl, de = self.shard_of.cpu(), self.slice_of.cpu(), self.deleted.cpu()
        return torch.nonzero((sh == shard) & (sl < stage) & ~de).flatten()

    def check_indices(self, indices: Iterable[int]) -> list[int]:
        """Sorted unique indices, refused (`IncompatibleError`) when out of range or already deleted."""
        idx = sorted({int(i) for i in indices})
        bad = [i for i in idx if not 0 <= i < self.num_train]
        if bad:
            raise IncompatibleError(
                f"training indices out of range [0, {self.num_train}): {bad[:5]}{'…' if len(bad) > 5 else ''}"
            )
        gone = [i for i in idx if bool(self.deleted[i])]
        if gone:
            raise IncompatibleError(f"training indices already deleted: {gone[:5]}{'…' if len(gone) > 5 else ''}")
        if not idx:
            raise IncompatibleError("the deletion request selects no training index")
        return idx

    # --- deletion ----------------------------------------------------------------------------------------
    def delete(
        self,
        train_set: Dataset,
        indices: Iterable[int],
        *,
        device: str | torch.device = "cpu",
        cache: Any = "default",
    ) -> DeletionReport:
        """Delete training ``indices`` (of ``train_set``, the set the ensemble was trained on); in place."""
        if len(train_set) != self.num_train:  # type: ignore[arg-type]
            raise IncompatibleError(
                f"the training set has {len(train_set)} points, the ensemble was trained on {self.num_train}"  # type: ignore[arg-type]
            )
        return delete_indices(self, _subset(train_set), indices, device=device, cache=cache)


# ------------------------------------------------------------------------------------------------- engine
def _cache(cache: Any) -> Any:
    from .cache import TensorCache

    if cache == "default":
        return TensorCache("sisa")
    return cache  # a TensorCache or None (no checkpoints)


def _stage_key(cache: Any, spec: SISASpec, shard: int, stage: int, idx: torch.Tensor, data_sha: str) -> str:
    return str(
        cache.key(
            member=spec.member,
            recipe=spec.recipe,
            seed=spec.seed,
            shards=spec.shards,
            slices=spec.slices,
            shard=shard,
            stage=stage,
            indices=hashlib.sha256(idx.numpy().tobytes()).hexdigest(),
            data=data_sha,
        )
    )


def _run_stages(
    model: nn.Module,
    spec: SISASpec,
    shard: int,
    first: int,
    stage_idx: Callable[[int], torch.Tensor],
    data_for: DataFor,
    device: str | torch.device,
    cache: Any,
    augment: Any = None,
) -> int:
    """Train ``model`` through stages ``first..R`` of ``shard`` (checkpointing each); return sample-passes."""
    from .training import train

    recipe = spec.recipe_obj()
    epochs = stage_epochs(recipe.epochs, spec.slices)
    processed = 0
    for r in range(first, spec.slices + 1):
        idx = stage_idx(r)
        data = data_for(idx)
        if epochs[r - 1] > 0 and len(idx) > 0:
            stage_recipe = Recipe(**{**spec.recipe, "epochs": epochs[r - 1]})
            train(
                model,
                data,
                stage_recipe,
                seed=_derive_seed(spec.seed, shard, r, "stage"),
                augment=augment,
                device=device,
                progress=False,
                desc=f"sisa shard {shard} stage {r}",
            )
            processed += len(idx) * epochs[r - 1]
        model.eval()
        if cache is not None:
            cache.save(
                _stage_key(cache, spec, shard, r, idx, _data_sha(data)),
                model.state_dict(),
                {"shard": str(shard), "stage": str(r)},
            )
    return processed


def _indices_of(ens: SISAEnsemble, shard: int, stage: int) -> torch.Tensor:
    return ens.training_indices(shard, stage)


def full_retrain_samples(ens: SISAEnsemble) -> int:
    """Sample-passes of training every shard from scratch on the current (reduced) data."""
    epochs = stage_epochs(ens.spec.recipe["epochs"], ens.spec.slices)
    return sum(
        len(ens.training_indices(s, r)) * epochs[r - 1]
        for s in range(ens.spec.shards)
        for r in range(1, ens.spec.slices + 1)
    )


def train_sisa(
    model: nn.Module | dict[str, Any] | Callable[[], nn.Module],
    train_set: Dataset,
    *,
    shards: int,
    slices: int = 1,
    recipe: Recipe | None = None,
    seed: int = 0,
    aggregation: Aggregation = "vote",
    device: str | torch.device = "cpu",
    cache: Any = "default",
    assignment: tuple[torch.Tensor, torch.Tensor] | None = None,
    deleted: Iterable[int] | torch.Tensor | None = None,
    augment: Any = None,
    dataset: str | None = None,
    data_for: DataFor | None = None,
    threads: int | None = None,
) -> SISAEnsemble:
    """Train a SISA ensemble of ``shards`` members, each over ``slices`` cumulative slices with checkpoints.

    Args:
        model: the member architecture: a model built by `unlearnkit.models.create_model` (its stored config is
            used; its weights are not), that config dict, or a zero-argument factory (then the ensemble cannot be
            rebuilt from a checkpoint without the factory).
        train_set: the full training set; indices refer to it.
        shards, slices: ``S`` and ``R``.
        recipe: the per-shard recipe; ``recipe.epochs`` is the nominal ``e`` split over the stages.
        seed: seeds the assignment, every member's initialisation and every stage.
        aggregation: ``vote`` (majority) or ``softmax`` (mean of the softmax vectors).
        cache: a `TensorCache` for the stage checkpoints (default: namespace ``sisa`` of the library cache),
            or None to keep none (deletion then retrains affected shards from their initialisation).
        assignment: (shard_of, slice_of) to reuse instead of drawing one (the oracle of a deletion).
        deleted: training indices to leave out (already deleted).
        augment: the dataset's augmentation (used when ``recipe.augment``).
        dataset: the dataset name, stored for the CLI.
        threads: CPU threads to train with (default: torch's current count); recorded in the spec, and every
            deletion and `oracle` runs with the same count, which bit-identity needs.
    """
    from .device import resolve_device
    from .models import model_config

    threads = int(threads) if threads is not None else torch.get_num_threads()
    if threads < 1:
        raise ConfigError(f"threads must be ≥ 1, got {threads}")
    recipe = recipe or Recipe()
    check_stage_epochs(recipe.epochs, slices)
    n = len(train_set)  # type: ignore[arg-type]
    if isinstance(model, nn.Module):
        member: dict[str, Any] | None = model_config(model)
        if member is None:
            raise ConfigError(
                "train_sisa needs a model built by unlearnkit.models.create_model (its config rebuilds the "
                "members), or pass a zero-argument factory"
            )
        factory: dict[str, Any] | Callable[[], nn.Module] = member
    elif isinstance(model, dict):
        member, factory = model, model
    else:
        member, factory = None, model
    if assignment is None:
        shard_of, slice_of = partition(n, shards, slices, seed)
    else:
        shard_of, slice_of = (t.long().cpu() for t in assignment)
        if len(shard_of) != n or len(slice_of) != n:
            raise IncompatibleError(f"the assignment covers {len(shard_of)} points, the training set has {n}")
        if int(shard_of.max()) >= shards or int(slice_of.max()) >= slices:
            raise IncompatibleError("the assignment does not match shards × slices")
    mask = torch.zeros(n, dtype=torch.bool)
    if isinstance(deleted, torch.Tensor) and deleted.dtype == torch.bool:
        mask |= deleted.cpu()
    elif deleted is not None:
        mask[torch.as_tensor(list(deleted), dtype=torch.long)] = True
    num_classes = int(member["num_classes"]) if member else 0
    spec = SISASpec(
        shards, slices, recipe.to_dict(), seed, aggregation, member, dataset, None, None, num_classes, threads
    )
    dev = resolve_device(device)
    members = [_build_member(factory, _derive_seed(seed, s, "init")) for s in range(shards)]
    if not num_classes:
        last = [m for m in members[0].modules() if isinstance(m, nn.Linear)]
        num_classes = last[-1].out_features if last else 0
        spec = SISASpec(**{**asdict(spec), "num_classes": num_classes})
    ens = SISAEnsemble(members, shard_of, slice_of, spec, mask)
    data_for = data_for or _subset(train_set)
    store = _cache(cache)
    t0 = time.perf_counter()
    processed = 0
    with pinned_threads(threads):
        for s, m in enumerate(ens.members):
            processed += _run_stages(
                m, spec, s, 1, functools.partial(_indices_of, ens, s), data_for, dev, store, augment
            )
    ens.spec = SISASpec(**{**asdict(spec), "train_seconds": time.perf_counter() - t0, "train_samples": processed})
    return ens.eval()


def delete_indices(
    ens: SISAEnsemble,
    data_for: DataFor,
    indices: Iterable[int],
    *,
    device: str | torch.device = "cpu",
    cache: Any = "default",
    augment: Any = None,
) -> DeletionReport:
    """Delete ``indices`` from ``ens`` in place: each affected shard restarts from its last clean checkpoint.

    ``data_for(idx)`` returns the training data at sorted training indices ``idx``. A restart checkpoint missing
    from the cache (or damaged) makes the shard restart from an earlier one, down to its initialisation: the
    result is the same, only slower (``DeletionReport.missing_checkpoints``).
    """
    from .device import resolve_device

    idx = ens.check_indices(indices)
    store = _cache(cache)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    first: dict[int, int] = {}
    for i in idx:
        s, r = int(ens.shard_of[i]), int(ens.slice_of[i]) + 1
        first[s] = min(first.get(s, r), r)
    ens.deleted[torch.as_tensor(idx, dtype=torch.long, device=ens.deleted.device)] = True
    processed = reused = missing = 0
    spec = ens.spec
    for s in sorted(first):
        member = ens.members[s]
        start = first[s]
        state = None
        while start > 1 and store is not None:
            prev = ens.training_indices(s, start - 1)
            state = store.load(_stage_key(store, spec, s, start - 1, prev, _data_sha(data_for(prev))))
            if state is not None:
                break
            missing += 1
            start -= 1
        if state is None:
            start = 1
            factory = spec.member if spec.member is not None else None
            if factory is None:
                raise CheckpointError(
                    f"shard {s}: no checkpoint to restart from and no stored member config to rebuild the "
                    "initialisation (the ensemble was built from a factory)"
                )
            state = _build_member(factory, _derive_seed(spec.seed, s, "init")).state_dict()
        else:
            reused += 1
        member.load_state_dict(state)
        with pinned_threads(spec.threads):
            processed += _run_stages(
                member, spec, s, start, functools.partial(_indices_of, ens, s), data_for, dev, store, augment
            )
    ens.eval()
    report = DeletionReport(
        indices=idx,
        shards={s: first[s] for s in sorted(first)},
        samples_processed=processed,
        full_retrain_samples=full_retrain_samples(ens),
        wall_seconds=time.perf_counter() - t0,
        full_retrain_seconds=spec.train_seconds,
        checkpoints_reused=reused,
        missing_checkpoints=missing,
        threads=spec.threads if spec.threads is not None else torch.get_num_threads(),
    )
    ens.last_deletion = report
    return report


def oracle(
    ens: SISAEnsemble, train_set: Dataset, *, device: str | torch.device = "cpu", augment: Any = None
) -> SISAEnsemble:
    """The SISA ensemble trained from scratch on the reduced data (same assignment, seeds and recipe), uncached."""
    spec = ens.spec
    factory: Any = spec.member
    if factory is None:
        raise ConfigError("the oracle of a factory-built ensemble needs train_sisa(factory, …, assignment=…)")
    return train_sisa(
        factory,
        train_set,
        shards=spec.shards,
        slices=spec.slices,
        recipe=spec.recipe_obj(),
        seed=spec.seed,
        aggregation=spec.aggregation,
        device=device,
        cache=None,
        assignment=ens.assignment(),
        deleted=ens.deleted.cpu(),
        augment=augment,
        dataset=spec.dataset,
        threads=spec.threads,
    )


def load_sisa(
    path: str | Path, *, device: str | torch.device = "cpu", factory: Callable[[], nn.Module] | None = None
) -> SISAEnsemble:
    """Load an ensemble written by `save_sisa` (a factory is needed only for factory-built members)."""
    from .models import load_into, read_checkpoint, validate_model_config

    state, meta = read_checkpoint(path)
    if SISA_META_KEY not in meta:
        raise CheckpointError(f"{Path(path).name} is not a SISA checkpoint (no {SISA_META_KEY} metadata)")
    try:
        raw = json.loads(meta[SISA_META_KEY])
    except ValueError:
        raise CheckpointError(f"{Path(path).name}: its SISA spec is not valid JSON") from None
    raw.pop("format", None)
    try:
        spec = SISASpec(**raw)
    except TypeError as exc:
        raise CheckpointError(f"{Path(path).name}: unreadable SISA spec ({exc})") from None
    if spec.member is not None:
        validate_model_config(spec.member, source=f"checkpoint {Path(path).name}")
        build: Any = spec.member
    elif factory is not None:
        build = factory
    else:
        raise CheckpointError(f"{Path(path).name}: its members were built by a factory; pass factory=…")
    members = [_build_member(build, 0) for _ in range(spec.shards)]
    n = len(state["shard_of"])
    ens = SISAEnsemble(members, torch.zeros(n), torch.zeros(n), spec)
    load_into(ens, state, source=f"checkpoint {Path(path).name}")
    return ens.to(device).eval()


@dataclass
class StreamResult:
    """Reports of a stream of deletion requests applied one after another."""

    reports: list[DeletionReport] = field(default_factory=list)

    @property
    def samples_processed(self) -> int:
        return sum(r.samples_processed for r in self.reports)


def delete_stream(ens: SISAEnsemble, train_set: Dataset, requests: Iterable[Iterable[int]], **kw: Any) -> StreamResult:
    """Apply several requests in order (each one a `SISAEnsemble.delete`)."""
    out = StreamResult()
    for req in requests:
        out.reports.append(ens.delete(train_set, req, **kw))
    return out


__all__ = [
    "SISA_META_KEY",
    "DeletionReport",
    "SISAEnsemble",
    "SISASpec",
    "StreamResult",
    "check_stage_epochs",
    "class_indices",
    "delete_indices",
    "delete_stream",
    "full_retrain_samples",
    "is_sisa_checkpoint",
    "load_sisa",
    "min_epochs",
    "oracle",
    "partition",
    "pinned_threads",
    "read_deleted_mask",
    "save_sisa",
    "stage_epochs",
    "train_sisa",
]
