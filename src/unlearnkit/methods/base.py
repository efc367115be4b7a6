"""The method contract: `Method` (one required `unlearn`) and `GradientMethod` (the shared, final loop).

A method file reads like the paper's algorithm box: it declares a frozen, typed ``Config`` and its
``requires``, describes its schedule as `Phase`s and overrides a few hooks. The loop services (device,
progress, divergence guard, deferred logging) live here and in `RunContext`; seeding, copying and timing
live in `unlearnkit.runner`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import difflib
import itertools
import math
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.datasets import Augment, ImageDataset
from ..data.loading import as_image_dataset, cycle_batches, iter_batches, sample_batch, stream_batches
from ..device import resolve_device
from ..errors import ConfigError, DivergenceError, IncompatibleError
from ..progress import progress_bar
from ..training import make_optimizer

SplitKind = Literal["random", "class"]


# ----------------------------------------------------------------------------------------------- types
@dataclass(frozen=True)
class UnlearnData:
    """What a method may read: the forget set, the retain set, and optionally test data and the split.

    ``augment`` is the training augmentation of the dataset (used only where a config asks for it).
    ``num_classes`` defaults to the model's output size. Any map-style torch ``Dataset`` of (image, label)
    works; our in-memory `ImageDataset` takes a faster path. ``original_weight_decay`` is the weight decay the
    original was trained with, when known (the default unlearning weight decay follows it).
    """

    forget: Dataset
    retain: Dataset | None = None
    test: Dataset | None = None
    split: Any = None  # unlearnkit.data.Split, when known
    augment: Augment | None = None
    num_classes: int | None = None
    original_weight_decay: float | None = None

    @classmethod
    def from_split(cls, bundle: Any, split: Any) -> UnlearnData:
        """The forget/retain/test sets of a `DatasetBundle` under a `Split`, with its augmentation and classes."""
        return cls(
            forget=bundle.train.subset(split.forget),
            retain=bundle.train.subset(split.retain),
            test=bundle.test,
            split=split,
            augment=bundle.info.augment,
            num_classes=bundle.info.num_classes,
        )

    @property
    def split_kind(self) -> SplitKind:
        if self.split is not None and getattr(self.split, "is_classwise", False):
            return "class"
        return "random"

    @property
    def forget_classes(self) -> tuple[int, ...]:
        return tuple(getattr(self.split, "forget_classes", ()) or ())


@dataclass(frozen=True)
class Batch:
    """What `GradientMethod` hooks receive: (images, labels) pairs already on the run's device.

    ``mixed`` holds a batch of a dataset the method built itself in ``setup`` (a `Phase` whose source is a
    Dataset, e.g. RL's relabelled forget ∪ retain set).
    """

    forget: tuple[torch.Tensor, torch.Tensor] | None = None
    retain: tuple[torch.Tensor, torch.Tensor] | None = None
    mixed: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class StepOutput:
    """The loss to back-propagate and named components to log (tensors or floats; converted lazily)."""

    loss: torch.Tensor
    logs: Mapping[str, float | torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Requirements:
    """Declared needs of a method, checked before any compute."""

    retain: bool = True
    original_model: bool = False
    labels: bool = True
    split_kinds: frozenset[str] = frozenset({"random", "class"})


Source = Literal["forget", "retain", "paired", "paired_retain", "interleaved"]


@dataclass(frozen=True)
class Phase:
    """One stage of a schedule, as data: what it iterates, for how long, in which batches.

    ``source``:

    * ``forget`` / ``retain``: passes over that set;
    * ``paired``: passes over the forget set, each batch paired with a retain batch drawn with ``ctx.rng``;
    * ``paired_retain``: passes over the retain set, each batch paired with a random forget batch;
    * ``interleaved``: ``steps`` steps, each with the next batch of an endless (reshuffled) retain stream and,
      every ``forget_every``-th step (steps 0, k, 2k, …), the next batch of an endless forget stream;
    * a ``Dataset`` the method built in ``setup``: passes over it, batches in ``Batch.mixed``.

    Length: ``epochs`` passes over the anchor set, or exactly ``steps`` steps when ``steps`` is set (the
    anchor set is then cycled). ``batch_size`` overrides the config's. ``epoch`` is the schedule's epoch
    number that hooks see (``ctx.epoch``, ``lr_at``); by default the loop counts passes from 1.
    """

    name: str
    source: Source | Dataset
    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = None
    epoch: int | None = None
    forget_every: int = 1

    def __post_init__(self) -> None:
        if self.source == "interleaved" and self.steps is None:
            raise ConfigError(f"phase {self.name!r}: an interleaved phase needs steps=…")
        if self.epochs < 0 or (self.steps is not None and self.steps < 0) or self.forget_every < 1:
            raise ConfigError(f"phase {self.name!r}: epochs and steps must be ≥ 0 and forget_every ≥ 1")


# --------------------------------------------------------------------------------------------- context
class NonFiniteLossError(Exception):
    """A loss turned NaN or inf (handled by the loop: rollback or `DivergenceError`)."""


class RunContext:
    """The only way methods reach the outside world: device, RNG, original model, logging, budget, cache.

    Args:
        device: where the run happens (``auto`` = cuda when present).
        seed: seeds ``rng``, the generator every random draw of a method goes through.
        original: a frozen copy of the original model (teachers), when the method needs one.
        progress: show a progress bar (None: follow ``UNLEARNKIT_PROGRESS``).
        max_steps: an external step budget (e.g. a tuning time limit).
        log_every: convert logged tensors to floats (a host sync) every this many steps; the default is 1 on
            the CPU and 50 on a GPU, so a GPU run does not wait for the device on every step.
        amp: ``"bf16"`` runs the losses under `torch.autocast` with bfloat16 (CUDA or CPU); None: full precision.
        num_workers: DataLoader workers for Datasets that are not in-memory `ImageDataset`s.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        seed: int = 0,
        *,
        original: nn.Module | None = None,
        progress: bool | None = False,
        max_steps: int | None = None,
        log_every: int | None = None,
        amp: Literal["bf16"] | None = None,
        num_workers: int = 0,
    ) -> None:
        if amp not in (None, "bf16"):
            raise ConfigError(f"amp must be None or 'bf16', got {amp!r} (fp16 would need a gradient scaler)")
        self.device = resolve_device(device)
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)
        self.original = original
        self.progress = progress
        self.max_steps = max_steps
        self.log_every = log_every or (1 if self.device.type == "cpu" else 50)
        self.amp = amp
        self.num_workers = num_workers
        self.steps = 0
        self.epoch = 0
        self.events: dict[str, float] = {}
        self.stop_reason: str | None = None
        self._history: list[dict[str, float]] = []
        self._pending: list[dict[str, Any]] = []
        self._bad: list[tuple[torch.Tensor, str]] = []

    @classmethod
    def local(cls, device: str | torch.device = "cpu", seed: int = 0, **kw: Any) -> RunContext:
        return cls(device, seed, **kw)

    # --- logging without per-step host syncs ------------------------------------------------------
    def log(self, **scalars: float | torch.Tensor) -> None:
        """Record scalars of this step; tensors are converted in batches of ``log_every`` steps."""
        self._pending.append(scalars)
        if len(self._pending) >= self.log_every:
            self.flush()

    def flush(self) -> None:
        """Convert pending log entries to floats and raise on a deferred non-finite loss (one host sync)."""
        self._history.extend({k: float(v) for k, v in entry.items()} for entry in self._pending)
        self._pending.clear()
        bad, self._bad = self._bad, []
        for flag, what in bad:
            if not bool(flag):
                raise NonFiniteLossError(f"non-finite {what}")

    @property
    def history(self) -> list[dict[str, float]]:
        self.flush()
        return self._history

    def check_finite(self, loss: torch.Tensor, what: str) -> None:
        """Raise `NonFiniteLossError` when ``loss`` is NaN/inf: at once on the CPU, at the next flush on a GPU."""
        what = f"{what} at step {self.steps}"
        if self.log_every <= 1 or self.device.type == "cpu":
            if not torch.isfinite(loss.detach()):
                raise NonFiniteLossError(f"non-finite {what} ({float(loss.detach())})")
        else:
            self._bad.append((torch.isfinite(loss.detach()).all(), what))

    # --- budget, precision, events ----------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast when ``amp="bf16"``, else a no-op."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def emit(self, event: str) -> None:
        """Mark a point of the run (``setup_end``): the device is synced and the time remembered."""
        self.synchronize()
        self.events[event] = time.perf_counter()

    def cache(self, namespace: str, version: int = 1) -> Any:
        """The library's verified tensor cache for ``namespace`` (`unlearnkit.cache.TensorCache`)."""
        from ..cache import TensorCache

        return TensorCache(namespace, version=version)


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free deep copy (teachers, originals)."""
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


# ---------------------------------------------------------------------------------------------- configs
@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base of every method's frozen hyper-parameters. Subclasses add fields and extend `validate`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ConfigError` for a bad value. Subclasses call ``super().validate()``."""

    @staticmethod
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def build(cls, values: Mapping[str, Any], method: str = "method") -> MethodConfig:
        """Build from a mapping; unknown keys are rejected with a did-you-mean hint, all at once."""
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            parts = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1, cutoff=0.5)
                parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(
                f"unknown option{'s' if len(unknown) > 1 else ''} for {method}: {', '.join(parts)}. "
                f"Valid options: {', '.join(names)}"
            )
        coerced = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for k, v in values.items():
            coerced[k] = _coerce(v, types[k], k, method)
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(value: Any, annotation: Any, key: str, method: str) -> Any:
    """Turn CLI strings ('0.1', 'true') into the annotated type; leave other values as given."""
    if not isinstance(value, str):
        if isinstance(value, bool) or value is None:
            return value
        ann = str(annotation)
        if ann.startswith("float") and isinstance(value, int):
            return float(value)
        return value
    ann = str(annotation).replace(" ", "")
    low = value.strip().lower()
    if low in ("none", "null") and "None" in ann:
        return None
    try:
        if ann.startswith("bool"):
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if ann.startswith("int"):
            return int(value)
        if ann.startswith("float"):
            return float(value)
    except ValueError:
        raise ConfigError(f"{method} option {key!r} expects {annotation}, got {value!r}") from None
    return value


@dataclass(frozen=True, kw_only=True)
class GradientConfig(MethodConfig):
    """Shared settings of `GradientMethod`s.

    Args:
        epochs: passes over the phase's anchor set.
        lr: base learning rate.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        momentum: optimizer momentum.
        weight_decay: None (default): the weight decay the original was trained with when known
            (``UnlearnData.original_weight_decay``), else 5e-4 (the reference codes' value, shared by their
            training and unlearning); a number sets it.
        batch_size: mini-batch size of both forget and retain batches.
        schedule: ``constant`` or ``cosine`` learning-rate decay over the run.
        max_steps: stop after this many optimizer steps (None: no limit).
        augment: apply the dataset's training augmentation to update batches (the reference codes do).
        on_divergence: ``raise`` a `DivergenceError` or ``rollback`` to the input weights (with a warning)
            when the loss turns non-finite or retain accuracy falls under ``collapse_floor``.
        collapse_floor: retain accuracy (percent, on a sample of up to 1,024 retain images) under which the
            run counts as collapsed; None disables the check.
        max_retain_drop: watch retain accuracy (the same sample; the test set for methods that must not read the
            retain set) during the run: when it falls more than this many points below its value at the start,
            the loop stops and the weights go back to the last check that was within the limit. None: 5 points
            for ascent-type methods, off for the others; 0 < value ≤ 100.
        stop_at_target: stop as soon as forget accuracy (a sample of up to 1,024 forget images) reaches what a
            model that never saw the forget set would score: 0 for a forgotten class, the model's own accuracy
            on held-out test data for random samples (needs ``data.test``), plus ``target_tolerance`` points. It
            needs no retrained model. None: off (the pipeline turns it on where no tuned preset exists).
        target_tolerance: slack of ``stop_at_target`` in points (default 1).
        check_every: steps between two checks of the two rules above (None: a tenth of the run; every check
            also happens at the end of each pass).
    """

    epochs: int = 5
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float | None = None
    batch_size: int = 128
    schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int | None = None
    augment: bool = False
    on_divergence: Literal["raise", "rollback"] = "raise"
    collapse_floor: float | None = None
    max_retain_drop: float | None = None
    stop_at_target: bool | None = None
    target_tolerance: float = 1.0
    check_every: int | None = None

    def validate(self) -> None:
        super().validate()
        self.check(self.epochs >= 0, f"epochs must be ≥ 0, got {self.epochs}")
        self.check(self.lr >= 0 and math.isfinite(self.lr), f"lr must be a finite number ≥ 0, got {self.lr}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(
            self.weight_decay is None or self.weight_decay >= 0,
            f"weight_decay must be ≥ 0 or None, got {self.weight_decay}",
        )
        self.check(
            self.optimizer in ("sgd", "adam", "adamw"), f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}"
        )
        self.check(
            self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine, got {self.schedule!r}"
        )
        self.check(
            self.on_divergence in ("raise", "rollback"),
            f"on_divergence must be 'raise' or 'rollback', got {self.on_divergence!r}",
        )
        self.check(self.max_steps is None or self.max_steps >= 0, f"max_steps must be ≥ 0, got {self.max_steps}")
        self.check(
            self.collapse_floor is None or 0 <= self.collapse_floor <= 100,
            f"collapse_floor must be a percentage in [0, 100], got {self.collapse_floor}",
        )
        self.check(
            self.max_retain_drop is None or 0 < self.max_retain_drop <= 100,
            f"max_retain_drop must be in (0, 100] percentage points, got {self.max_retain_drop}",
        )
        self.check(self.target_tolerance >= 0, f"target_tolerance must be ≥ 0, got {self.target_tolerance}")
        self.check(
            self.check_every is None or self.check_every >= 1, f"check_every must be ≥ 1, got {self.check_every}"
        )


# ---------------------------------------------------------------------------------------------- methods
class Method(ABC):
    """Base class of unlearning methods: configured once, applied many times, no state between calls.

    ``unlearn`` modifies ``model`` in place and returns it; `unlearnkit.unlearn` and the runner pass a copy.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    requires: ClassVar[Requirements] = Requirements()
    paper: ClassVar[str | None] = None
    summary: ClassVar[str] = ""
    name: ClassVar[str] = ""  # set by the registry
    #: Tiny config overrides that make the method finish in seconds on `unlearnkit.testing.tiny_data()`; used by
    #: the contract suite and `unlearnkit.testing.check_method` (for example ``{"epochs": 1}``).
    smoke_config: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, config: MethodConfig | None = None, /, **overrides: Any) -> None:
        if config is None:
            config = self.Config.build(overrides, self.name or type(self).__name__)
        elif overrides:
            config = self.Config.build({**config.to_dict(), **overrides}, self.name or type(self).__name__)
        if not isinstance(config, self.Config):
            raise ConfigError(f"{type(self).__name__} expects a {self.Config.__name__}, got {type(config).__name__}")
        self._config = config

    @property
    def config(self) -> Any:
        return self._config

    def check_compatible(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        """Collect every problem with (model, data, context) and raise them together."""
        problems = []
        if self.requires.retain and (data.retain is None or len(data.retain) == 0):  # type: ignore[arg-type]
            problems.append(f"`{self.name}` needs a non-empty retain set; pass retain=…")
        if self.requires.original_model and ctx.original is None:
            problems.append(f"`{self.name}` needs the original model (teacher); pass original=…")
        if data.split_kind not in self.requires.split_kinds:
            problems.append(
                f"`{self.name}` supports only {'/'.join(sorted(self.requires.split_kinds))} forgetting, "
                f"not {data.split_kind}"
            )
        if len(data.forget) == 0:  # type: ignore[arg-type]
            problems.append("the forget set is empty")
        if problems:
            raise IncompatibleError(problems)

    @abstractmethod
    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        """Remove the influence of ``data.forget`` from ``model`` (in place) and return it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config})"


#: The parts of `GradientMethod` that are the shared loop: a subclass that redefines one is refused.
FINAL_LOOP_METHODS = ("unlearn", "batches", "total_steps")


class GradientMethod(Method):
    """Template for methods that update weights with an optimizer over batches; ``unlearn`` is the shared loop.

    A method describes its schedule as data (``schedule`` yields `Phase`s) and overrides hooks: ``loss``
    (required); optionally ``setup``, ``after_backward``, ``after_step``, ``make_optimizer``, ``lr_at``,
    ``training_step``, ``on_epoch_end``, ``finalize``, ``teardown``. ``unlearn``, ``batches`` and
    ``total_steps`` are final (defining them in a subclass raises `TypeError`). ``train_mode`` says whether
    BatchNorm runs in train mode during updates.
    """

    Config: ClassVar[type[MethodConfig]] = GradientConfig
    train_mode: ClassVar[bool] = True
    guard_divergence: ClassVar[bool] = False  # ascent-type methods set True: collapse check is on by default

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = [name for name in FINAL_LOOP_METHODS if name in vars(cls)]
        if overridden:
            raise TypeError(
                f"{cls.__name__} overrides {', '.join(overridden)} of GradientMethod, the shared loop; "
                "describe the schedule with Phase(source=…, epochs=…/steps=…, batch_size=…) and use the "
                "hooks (setup, loss, training_step, on_epoch_end, finalize) instead"
            )

    # --- hooks ---------------------------------------------------------------------------------
    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        """Build masks, teachers, statistics or datasets (for `Phase` sources) before the loop."""

    def schedule(self) -> Iterable[Phase]:
        """The phases, in order (called after ``setup``)."""
        yield Phase("main", "paired", self.config.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> torch.Tensor | StepOutput:
        raise NotImplementedError

    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        """Edit gradients (masking, projection) before the optimizer step."""

    def after_step(self, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
        """Edit weights or optimizer state after the optimizer step (re-apply a mask, reset frozen weights)."""

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return make_optimizer(
            [p for p in model.parameters() if p.requires_grad], c.optimizer, c.lr, c.momentum, self.weight_decay()
        )

    def weight_decay(self) -> float:
        """The run's weight decay: the config's, else the original's (``UnlearnData.original_weight_decay``, known
        once ``unlearn`` started), else `DEFAULT_WEIGHT_DECAY`."""
        return resolve_weight_decay(self.config.weight_decay, getattr(self, "original_weight_decay_", None))

    def lr_at(self, step: int, total: int, epoch: int) -> float:
        """Learning rate of optimizer step ``step`` (from 0) of ``total``, in schedule epoch ``epoch``."""
        c = self.config
        if c.schedule == "cosine":
            return c.lr * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
        return c.lr

    def training_step(
        self, model: nn.Module, batch: Batch, phase: Phase, optimizer: torch.optim.Optimizer, ctx: RunContext
    ) -> StepOutput:
        """One update: loss (under ``ctx.autocast()``), finite check, backward, ``after_backward``, step,
        ``after_step``."""
        with ctx.autocast():
            out = self.loss(model, batch, phase, ctx)
        if isinstance(out, torch.Tensor):
            out = StepOutput(out)
        ctx.check_finite(out.loss, f"loss in phase {phase.name!r}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.after_backward(model, ctx)
        optimizer.step()
        self.after_step(model, optimizer, ctx)
        return out

    def on_epoch_end(self, model: nn.Module, phase: Phase, ctx: RunContext) -> None:
        """Called after each complete pass of a phase (``ctx.epoch`` says which), e.g. to keep a checkpoint."""

    def finalize(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> nn.Module:
        """Last edit after the loop and before the divergence check (rewind to a checkpoint, prune)."""
        return model

    def teardown(self, ctx: RunContext) -> None:
        """Drop learned state (attributes ending in ``_``)."""
        for k in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, k)

    # --- the loop (final) ------------------------------------------------------------------------
    def _source(self, phase: Phase, data: UnlearnData, which: str) -> Dataset | None:
        """The dataset a phase reads for ``which`` (``anchor`` or ``partner``); sets are touched only when read."""
        src = phase.source
        if not isinstance(src, str):
            return src if which == "anchor" else None
        name = {
            ("forget", "anchor"): "forget",
            ("paired", "anchor"): "forget",
            ("paired_retain", "partner"): "forget",
            ("interleaved", "partner"): "forget",
            ("retain", "anchor"): "retain",
            ("paired", "partner"): "retain",
            ("paired_retain", "anchor"): "retain",
            ("interleaved", "anchor"): "retain",
        }.get((src, which))
        ds = getattr(data, name) if name else None
        if ds is None and which == "anchor":
            raise IncompatibleError(f"`{self.name}` phase {phase.name!r} iterates the {name} set, but none was given")
        return ds

    def _batch_size(self, phase: Phase) -> int:
        return phase.batch_size or self.config.batch_size

    def batches(self, phase: Phase, data: UnlearnData, ctx: RunContext) -> Iterator[Batch]:
        """One pass of ``phase`` (or all its ``steps`` when it counts steps), as `Batch`es on ``ctx.device``."""
        bs = self._batch_size(phase)
        kw: dict[str, Any] = {
            "generator": ctx.rng,
            "augment": data.augment if self.config.augment else None,
            "device": ctx.device,
        }
        anchor = self._source(phase, data, "anchor")
        partner = self._source(phase, data, "partner")
        assert anchor is not None  # _source raises for a missing anchor set
        src = phase.source if isinstance(phase.source, str) else "mixed"
        stream: Iterator[tuple[torch.Tensor, torch.Tensor]]
        if phase.steps is not None:
            stream = itertools.islice(cycle_batches(anchor, bs, num_workers=ctx.num_workers, **kw), phase.steps)
        else:
            stream = stream_batches(anchor, bs, shuffle=True, num_workers=ctx.num_workers, **kw)
        if src == "interleaved":
            assert partner is not None
            forget_stream = cycle_batches(partner, bs, num_workers=ctx.num_workers, **kw)
            for t in range(phase.steps or 0):
                fb = next(forget_stream) if t % phase.forget_every == 0 else None
                yield Batch(forget=fb, retain=next(stream))
            return
        for ab in stream:
            if src == "mixed":
                yield Batch(mixed=ab)
            elif src in ("forget", "retain"):
                yield Batch(**{src: ab})
            else:
                pb = sample_batch(partner, len(ab[1]), **kw) if partner is not None and len(partner) else None  # type: ignore[arg-type]
                yield Batch(forget=ab, retain=pb) if src == "paired" else Batch(forget=pb, retain=ab)

    def _phase_steps(self, phase: Phase, data: UnlearnData) -> int:
        if phase.steps is not None:
            return phase.steps
        anchor = self._source(phase, data, "anchor")
        return phase.epochs * -(-len(anchor) // self._batch_size(phase))  # type: ignore[arg-type]

    def total_steps(self, data: UnlearnData) -> int:
        """Optimizer steps of the whole schedule, capped by ``max_steps`` (valid once ``setup`` has run)."""
        total = sum(self._phase_steps(ph, data) for ph in self.schedule())
        c = self.config
        return min(total, c.max_steps) if c.max_steps is not None else total

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        c = self.config
        model.to(ctx.device)
        # A rollback copy only when rollback is asked for, and in host memory.
        backup = (
            {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            if c.on_divergence == "rollback"
            else None
        )
        try:
            self.original_weight_decay_ = data.original_weight_decay
            self.setup(model, data, ctx)
            optimizer = self.make_optimizer(model)
            phases = list(self.schedule())
            total = self.total_steps(data)
            ctx.emit("setup_end")
            self._loop(model, data, ctx, phases, optimizer, total)
            ctx.flush()
            model = self.finalize(model, data, ctx)
            model.eval()
            why = _nonfinite_parameter(model) or self._collapse_reason(model, data, ctx)
            if why:
                self._diverged(model, backup, why)
        except NonFiniteLossError as exc:
            self._diverged(model, backup, str(exc))
        finally:
            self.teardown(ctx)
        model.eval()
        return model

    def _loop(
        self,
        model: nn.Module,
        data: UnlearnData,
        ctx: RunContext,
        phases: list[Phase],
        optimizer: torch.optim.Optimizer,
        total: int,
    ) -> None:
        max_steps = self.config.max_steps
        step, passes = 0, 0
        watch = self._watch(model, data, ctx, total)
        with progress_bar(self.name or type(self).__name__, total, ctx.progress) as bar:
            for phase in phases:
                for e in range(1 if phase.steps is not None else phase.epochs):
                    passes += 1
                    ctx.epoch = phase.epoch + e if phase.epoch is not None else passes
                    complete = True
                    for batch in self.batches(phase, data, ctx):
                        if (max_steps is not None and step >= max_steps) or ctx.should_stop():
                            complete = False
                            break
                        lr = self.lr_at(step, total, ctx.epoch)
                        for g in optimizer.param_groups:
                            g["lr"] = lr
                        model.train(self.train_mode)
                        out = self.training_step(model, batch, phase, optimizer, ctx)
                        step += 1
                        ctx.steps += 1
                        ctx.log(step=step, loss=out.loss.detach(), **out.logs)
                        bar.advance()
                        if watch is not None and step % watch.every == 0 and watch.check(model, ctx):
                            return
                    if complete:
                        self.on_epoch_end(model, phase, ctx)
                        if watch is not None and watch.check(model, ctx):
                            return

    def _watch(self, model: nn.Module, data: UnlearnData, ctx: RunContext, total: int) -> _Watch | None:
        """The in-run stopping rules of the config (retain-drop guard, forget-accuracy target), or None."""
        c = self.config
        drop = c.max_retain_drop
        if drop is None and self.guard_divergence:
            drop = DEFAULT_MAX_RETAIN_DROP
        probe = data.retain if self.requires.retain else data.test
        if probe is None or len(probe) == 0:  # type: ignore[arg-type]
            drop = None
        target: Literal["zero", "test"] | None = None
        if c.stop_at_target:
            if data.split_kind == "class":
                target = "zero"
            elif data.test is not None and len(data.test) > 0:  # type: ignore[arg-type]
                target = "test"
        if drop is None and target is None:
            return None
        w = _Watch(
            probe=probe,
            drop=drop,
            forget=data.forget,
            test=data.test,
            target=target,
            tolerance=c.target_tolerance,
            every=c.check_every or max(1, total // 10),
        )
        w.start(model, ctx)
        return w

    # --- divergence safety -------------------------------------------------------------------------
    def _collapse_reason(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> str | None:
        floor = self.config.collapse_floor
        if floor is None and self.guard_divergence:
            floor = DEFAULT_COLLAPSE_FLOOR
        # The check measures accuracy on retain images; a method that declares it does not need the retain set
        # must never read it, so it is checked on the test set instead (when one was given).
        probe = data.retain if self.requires.retain else data.test
        where = "retain" if self.requires.retain else "test"
        if floor is None or probe is None or len(probe) == 0:  # type: ignore[arg-type]
            return None
        acc = retain_accuracy_sample(model, probe, ctx)
        if not math.isfinite(acc) or acc < floor:
            return f"{where} accuracy collapsed to {acc:.1f}% (floor {floor:g}%)"
        return None

    def _diverged(self, model: nn.Module, backup: dict[str, torch.Tensor] | None, why: str) -> None:
        hint = (
            f"`{self.name}` diverged: {why}. Lower lr or epochs (e.g. --set lr=…), or set "
            "on_divergence=rollback to return the input weights instead."
        )
        if backup is not None:
            model.load_state_dict(backup)
            warnings.warn(hint + " Rolled back to the input weights.", RuntimeWarning, stacklevel=3)
            return
        raise DivergenceError(hint)


DEFAULT_COLLAPSE_FLOOR = 20.0
#: Unlearning weight decay when neither the config nor the original's training recipe gives one.
DEFAULT_WEIGHT_DECAY = 5e-4


def resolve_weight_decay(configured: float | None, original: float | None) -> float:
    """``configured`` when set, else the original's training weight decay when known, else 5e-4."""
    if configured is not None:
        return configured
    return original if original is not None else DEFAULT_WEIGHT_DECAY


#: Retain-accuracy drop (points) at which ascent-type methods stop and go back to their last good check.
DEFAULT_MAX_RETAIN_DROP = 5.0


@dataclass
class _Watch:
    """The in-run rules that need no retrained model: stop at the forget target, stop on a retain drop."""

    probe: Dataset | None
    drop: float | None
    forget: Dataset
    test: Dataset | None
    target: Literal["zero", "test"] | None
    tolerance: float
    every: int
    start_acc: float = math.nan
    good: dict[str, torch.Tensor] | None = None

    def _keep(self, model: nn.Module) -> None:
        if self.drop is not None:
            self.good = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def start(self, model: nn.Module, ctx: RunContext) -> None:
        if self.probe is not None and self.drop is not None:
            self.start_acc = retain_accuracy_sample(model, self.probe, ctx)
        self._keep(model)

    def check(self, model: nn.Module, ctx: RunContext) -> bool:
        """True when the run must stop here (``ctx.stop_reason`` says why; weights restored on a retain drop)."""
        if self.drop is not None and self.probe is not None:
            acc = retain_accuracy_sample(model, self.probe, ctx)
            if not acc >= self.start_acc - self.drop:
                if self.good is not None:
                    model.load_state_dict(self.good)
                ctx.stop_reason = (
                    f"retain accuracy fell from {self.start_acc:.1f}% to {acc:.1f}% (more than "
                    f"{self.drop:g} points) at step {ctx.steps}; restored the last check within it"
                )
                warnings.warn(
                    f"Stopped early: {ctx.stop_reason}. Lower lr or epochs, or raise max_retain_drop "
                    "(100 turns the guard off).",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return True
        if self.target is not None:
            forget_acc = retain_accuracy_sample(model, self.forget, ctx)
            goal = 0.0 if self.target == "zero" else retain_accuracy_sample(model, self.test, ctx)  # type: ignore[arg-type]
            if forget_acc <= goal + self.tolerance:
                ctx.stop_reason = (
                    f"forget accuracy {forget_acc:.1f}% reached its target {goal:.1f}% "
                    f"(+{self.tolerance:g}) at step {ctx.steps}"
                )
                return True
        self._keep(model)
        return False


def _nonfinite_parameter(model: nn.Module) -> str | None:
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()), None)
    return f"parameter {bad!r} holds non-finite values" if bad else None


def infer_num_classes(model: nn.Module, data: UnlearnData | None = None) -> int:
    """``data.num_classes`` when given, else the output size of the model's head (or its last Linear layer)."""
    if data is not None and data.num_classes:
        return int(data.num_classes)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise IncompatibleError(
            "cannot infer the number of classes: the model has no `head` or nn.Linear layer; "
            "pass UnlearnData(num_classes=…)"
        )
    return linears[-1].out_features


@torch.no_grad()
def retain_accuracy_sample(model: nn.Module, retain: Dataset, ctx: RunContext, n: int = 1024) -> float:
    g = torch.Generator().manual_seed(ctx.seed + 7919)
    idx = torch.randperm(len(retain), generator=g)[:n].numpy()  # type: ignore[arg-type]
    sub = retain.subset(idx) if isinstance(retain, ImageDataset) else as_image_dataset(Subset(retain, idx.tolist()))
    was = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=ctx.device)
    for x, y in iter_batches(sub, 512, device=ctx.device):
        correct += (model(x).argmax(1) == y).sum()
    model.train(was)
    return 100.0 * int(correct) / max(len(sub), 1)


__all__ = [
    "FINAL_LOOP_METHODS",
    "Batch",
    "GradientConfig",
    "GradientMethod",
    "ImageDataset",
    "Method",
    "MethodConfig",
    "NonFiniteLossError",
    "Phase",
    "Requirements",
    "RunContext",
    "StepOutput",
    "UnlearnData",
    "frozen_copy",
    "infer_num_classes",
]
