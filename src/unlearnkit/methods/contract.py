"""The method contract: what a method declares and receives.

`Method` (one required ``unlearn``), its frozen configs (`MethodConfig`, `GradientConfig`), its declared needs
(`Requirements`), what it may read (`UnlearnData`) and, for gradient methods, the data of a step (`Batch`,
`StepOutput`) and of a schedule (`Phase`). The context a run reaches the world through lives in
`unlearnkit.methods.context`; the shared loop of gradient methods in `unlearnkit.methods.loop`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.datasets import Augment
from ..errors import ConfigError, IncompatibleError

if TYPE_CHECKING:
    from .context import RunContext

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
    #: The checkpoint kinds (`unlearnkit.jobs.checkpoints.KINDS`) the method can delete from: a network
    #: (``plain``), a SISA ensemble (``sisa``), a frozen backbone with a ridge or certified head (``head``).
    model_kinds: frozenset[str] = frozenset({"plain"})


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

    Partner stream (a second source consumed alongside the anchor, by the loop, so its step count and watch see
    it): ``partner="forget"`` (or ``"retain"``) fills that field of every `Batch` from an endless reshuffled
    stream of that set (``partner_data``: a Dataset to read in its place, e.g. the forget images relabelled
    with fixed targets). A new partner batch is drawn (after the anchor batch, with ``ctx.rng``) at steps 0, k,
    2k, … of the phase (k = ``partner_every``); between draws ``hold=True`` repeats the last partner batch and
    ``hold=False`` leaves the field empty. Each phase starts a fresh pass of its partner.

    Optimizer: ``lr`` is this phase's base learning rate in place of the config's ``lr`` (the schedule's decay,
    ``lr_at(…) / config.lr``, still scales it); ``fresh_optimizer=True`` clears the optimizer's state (momenta,
    Adam moments and step counts) when the phase starts, as a newly built optimizer would start.
    """

    name: str
    source: Source | Dataset
    epochs: int = 1
    steps: int | None = None
    batch_size: int | None = None
    epoch: int | None = None
    forget_every: int = 1
    partner: Literal["forget", "retain"] | None = None
    partner_every: int = 1
    hold: bool = False
    partner_data: Dataset | None = None
    lr: float | None = None
    fresh_optimizer: bool = False

    def __post_init__(self) -> None:
        where = f"phase {self.name!r}"
        if self.source == "interleaved" and self.steps is None:
            raise ConfigError(f"{where}: an interleaved phase needs steps=…")
        if self.epochs < 0 or (self.steps is not None and self.steps < 0) or self.forget_every < 1:
            raise ConfigError(f"{where}: epochs and steps must be ≥ 0 and forget_every ≥ 1")
        if self.partner not in (None, "forget", "retain"):
            raise ConfigError(f"{where}: partner must be 'forget', 'retain' or None, got {self.partner!r}")
        if self.partner is not None:
            anchor_field = self.source if self.source in ("forget", "retain") else None
            if isinstance(self.source, str) and self.source not in ("forget", "retain"):
                raise ConfigError(
                    f"{where}: a {self.source!r} phase already pairs its batches; a partner stream needs a "
                    "'forget', 'retain' or Dataset source"
                )
            if self.partner == anchor_field:
                raise ConfigError(f"{where}: the partner ({self.partner!r}) must differ from the source")
        elif self.partner_data is not None or self.hold:
            raise ConfigError(f"{where}: partner_data and hold need partner='forget' or 'retain'")
        if self.partner_every < 1:
            raise ConfigError(f"{where}: partner_every must be ≥ 1, got {self.partner_every}")
        if self.lr is not None and not (self.lr >= 0 and math.isfinite(self.lr)):
            raise ConfigError(f"{where}: lr must be a finite number ≥ 0 or None, got {self.lr}")


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
            the loop stops and the weights go back to the last check that was within the limit (the run's outcome
            is then ``partial``, or ``no_op`` when that is the start). For a class request the test set leaves out
            the forgotten classes. None: 5 points for ascent-type methods, 10 for the others; 0 < value ≤ 100
            (100 turns it off).
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
            problems.append(
                f"`{self.name}` needs a non-empty retain set: forget fewer images (on the CLI, a --forget spec that "
                "leaves training images; in Python, pass retain=…)"
            )
        if self.requires.original_model and ctx.original is None:
            problems.append(
                f"`{self.name}` needs the original model (teacher): in Python pass original=…; on the CLI use `run` "
                "(or `unlearn`, whose checkpoint is the original)"
            )
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
