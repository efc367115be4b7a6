"""The method contract: `Method` (one required `unlearn`) and `GradientMethod` (the shared, instrumented loop).

A method file reads like the paper's algorithm box: it declares a frozen, typed ``Config`` and its
``requires``, and overrides a few hooks. The loop services (device, seeding, progress, divergence guard)
live here and in `RunContext`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Iterator, Literal, Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.datasets import Augment, ImageDataset
from ..data.loading import as_image_dataset, iter_batches
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
    ``num_classes`` defaults to the model's output size.
    """

    forget: Dataset
    retain: Dataset | None = None
    test: Dataset | None = None
    split: Any = None  # unlearnkit.data.Split, when known
    augment: Augment | None = None
    num_classes: int | None = None

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
    """What `GradientMethod` hooks receive: (images, labels) pairs already on the run's device."""

    forget: tuple[torch.Tensor, torch.Tensor] | None = None
    retain: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class StepOutput:
    loss: torch.Tensor
    logs: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Requirements:
    """Declared needs of a method, checked before any compute."""

    retain: bool = True
    original_model: bool = False
    labels: bool = True
    split_kinds: frozenset[str] = frozenset({"random", "class"})


@dataclass(frozen=True)
class Phase:
    """One stage of a schedule: ``source`` says which data it iterates.

    * ``forget`` / ``retain``: one pass over that set;
    * ``paired``: one pass over the forget set, each batch paired with a retain batch drawn with ``ctx.rng``;
    * ``paired_retain``: one pass over the retain set, each batch paired with a random forget batch.
    """

    name: str
    source: Literal["forget", "retain", "paired", "paired_retain"]
    epochs: int = 1


# --------------------------------------------------------------------------------------------- context
class RunContext:
    """The only way methods reach the outside world: device, RNG, original model, logging, budget."""

    def __init__(self, device: str | torch.device = "cpu", seed: int = 0, *, original: nn.Module | None = None,
                 progress: bool | None = False, max_steps: int | None = None) -> None:
        self.device = resolve_device(device)
        self.seed = seed
        self.rng = torch.Generator().manual_seed(seed)
        self.original = original
        self.progress = progress
        self.max_steps = max_steps
        self.steps = 0
        self.history: list[dict[str, float]] = []

    @classmethod
    def local(cls, device: str | torch.device = "cpu", seed: int = 0, **kw: Any) -> "RunContext":
        return cls(device, seed, **kw)

    def log(self, **scalars: float) -> None:
        self.history.append({k: float(v) for k, v in scalars.items()})

    def should_stop(self) -> bool:
        return self.max_steps is not None and self.steps >= self.max_steps

    def autocast(self):  # noqa: ANN201 - context manager
        return torch.autocast(self.device.type, enabled=False)


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
    def build(cls, values: Mapping[str, Any], method: str = "method") -> "MethodConfig":
        """Build from a mapping; unknown keys are rejected with a did-you-mean hint, all at once."""
        names = cls.field_names()
        unknown = [k for k in values if k not in names]
        if unknown:
            parts = []
            for k in unknown:
                close = difflib.get_close_matches(k, names, n=1, cutoff=0.5)
                parts.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} for {method}: {', '.join(parts)}. "
                              f"Valid options: {', '.join(names)}")
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
        momentum, weight_decay: optimizer settings.
        batch_size: mini-batch size of both forget and retain batches.
        schedule: ``constant`` or ``cosine`` learning-rate decay over the run.
        max_steps: stop after this many optimizer steps (None: no limit).
        augment: apply the dataset's training augmentation to update batches (the reference codes do).
        on_divergence: ``raise`` a `DivergenceError` or ``rollback`` to the input weights (with a warning)
            when the loss turns non-finite or retain accuracy falls under ``collapse_floor``.
        collapse_floor: retain accuracy (percent, on a sample of up to 1,024 retain images) under which the
            run counts as collapsed; None disables the check.
    """

    epochs: int = 5
    lr: float = 0.01
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    schedule: Literal["constant", "cosine"] = "constant"
    max_steps: int | None = None
    augment: bool = False
    on_divergence: Literal["raise", "rollback"] = "raise"
    collapse_floor: float | None = None

    def validate(self) -> None:
        super().validate()
        self.check(self.epochs >= 0, f"epochs must be ≥ 0, got {self.epochs}")
        self.check(self.lr >= 0 and math.isfinite(self.lr), f"lr must be a finite number ≥ 0, got {self.lr}")
        self.check(self.batch_size >= 1, f"batch_size must be ≥ 1, got {self.batch_size}")
        self.check(self.optimizer in ("sgd", "adam", "adamw"), f"optimizer must be sgd, adam or adamw, got {self.optimizer!r}")
        self.check(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine, got {self.schedule!r}")
        self.check(self.on_divergence in ("raise", "rollback"),
                   f"on_divergence must be 'raise' or 'rollback', got {self.on_divergence!r}")
        self.check(self.max_steps is None or self.max_steps >= 0, f"max_steps must be ≥ 0, got {self.max_steps}")
        self.check(self.collapse_floor is None or 0 <= self.collapse_floor <= 100,
                   f"collapse_floor must be a percentage in [0, 100], got {self.collapse_floor}")


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
    smoke_config: ClassVar[dict[str, Any]] = {}

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
            problems.append(f"`{self.name}` supports only {'/'.join(sorted(self.requires.split_kinds))} forgetting, "
                            f"not {data.split_kind}")
        if len(data.forget) == 0:  # type: ignore[arg-type]
            problems.append("the forget set is empty")
        if problems:
            raise IncompatibleError(problems)

    @abstractmethod
    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        """Remove the influence of ``data.forget`` from ``model`` (in place) and return it."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._config})"


class GradientMethod(Method):
    """Template for methods that update weights with an optimizer over batches.

    Override ``loss`` (required), and optionally ``setup``, ``schedule``, ``after_backward``,
    ``make_optimizer``, ``training_step``, ``teardown``. ``train_mode`` says whether BatchNorm runs in
    train mode during updates (methods.md states this per method).
    """

    Config: ClassVar[type[MethodConfig]] = GradientConfig
    train_mode: ClassVar[bool] = True
    guard_divergence: ClassVar[bool] = False  # ascent-type methods set True: collapse check is on by default

    # --- hooks ---------------------------------------------------------------------------------
    def setup(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> None:
        """Build masks, teachers or statistics before the loop."""

    def schedule(self) -> Iterable[Phase]:
        yield Phase("main", "paired", self.config.epochs)

    def loss(self, model: nn.Module, batch: Batch, phase: Phase, ctx: RunContext) -> torch.Tensor | StepOutput:
        raise NotImplementedError

    def after_backward(self, model: nn.Module, ctx: RunContext) -> None:
        """Edit gradients (masking, projection) before the optimizer step."""

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return make_optimizer([p for p in model.parameters() if p.requires_grad], c.optimizer, c.lr, c.momentum,
                              c.weight_decay)

    def lr_at(self, step: int, total: int) -> float:
        c = self.config
        if c.schedule == "cosine":
            return c.lr * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
        return c.lr

    def training_step(self, model: nn.Module, batch: Batch, phase: Phase, optimizer: torch.optim.Optimizer,
                      ctx: RunContext) -> StepOutput:
        out = self.loss(model, batch, phase, ctx)
        if isinstance(out, torch.Tensor):
            out = StepOutput(out)
        if not torch.isfinite(out.loss.detach()):
            raise _NonFinite(f"non-finite loss {float(out.loss.detach())} in phase {phase.name!r} at step {ctx.steps}")
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.after_backward(model, ctx)
        optimizer.step()
        return out

    def teardown(self, ctx: RunContext) -> None:
        """Drop learned state (attributes ending in ``_``)."""
        for k in [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]:
            delattr(self, k)

    # --- the loop (final) ------------------------------------------------------------------------
    def batches(self, phase: Phase, data: UnlearnData, ctx: RunContext) -> Iterator[Batch]:
        c = self.config
        aug = data.augment if c.augment else None
        dev = ctx.device
        # Materialise only the sets this phase reads: a method that does not need the retain set never touches it.
        forget = as_image_dataset(data.forget) if phase.source != "retain" else None
        retain = (as_image_dataset(data.retain) if data.retain is not None and phase.source != "forget" else None)
        if phase.source == "forget":
            for fb in iter_batches(forget, c.batch_size, shuffle=True, generator=ctx.rng, augment=aug, device=dev):
                yield Batch(forget=fb)
        elif phase.source == "retain":
            if retain is None:
                raise IncompatibleError(f"`{self.name}` phase {phase.name!r} iterates the retain set, but none was given")
            for rb in iter_batches(retain, c.batch_size, shuffle=True, generator=ctx.rng, augment=aug, device=dev):
                yield Batch(retain=rb)
        else:
            anchor, other = (forget, retain) if phase.source == "paired" else (retain, forget)
            if anchor is None:
                raise IncompatibleError(f"`{self.name}` phase {phase.name!r} iterates the retain set, but none was given")
            for ab in iter_batches(anchor, c.batch_size, shuffle=True, generator=ctx.rng, augment=aug, device=dev):
                ob = None
                if other is not None and len(other):
                    idx = torch.randint(0, len(other), (len(ab[1]),), generator=ctx.rng)
                    ob = next(iter_batches(other.subset(idx.numpy()), len(idx), generator=ctx.rng, augment=aug,
                                           device=dev))
                yield Batch(forget=ab, retain=ob) if phase.source == "paired" else Batch(forget=ob, retain=ab)

    def total_steps(self, data: UnlearnData) -> int:
        c = self.config

        def size(source: str) -> int:
            # Only the sets a phase iterates are measured (len() of the retain set counts as reading it).
            if source in ("forget", "paired"):
                return len(data.forget)  # type: ignore[arg-type]
            return len(data.retain) if data.retain is not None else 0  # type: ignore[arg-type]

        total = sum(ph.epochs * -(-size(ph.source) // c.batch_size) for ph in self.schedule())
        return min(total, c.max_steps) if c.max_steps is not None else total

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        c = self.config
        model.to(ctx.device)
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        try:
            self.setup(model, data, ctx)
            optimizer = self.make_optimizer(model)
            total = self.total_steps(data)
            step = 0
            with progress_bar(self.name or type(self).__name__, total, ctx.progress) as bar:
                for phase in self.schedule():
                    for _ in range(phase.epochs):
                        for batch in self.batches(phase, data, ctx):
                            if (c.max_steps is not None and step >= c.max_steps) or ctx.should_stop():
                                break
                            for g in optimizer.param_groups:
                                g["lr"] = self.lr_at(step, total)
                            model.train(self.train_mode)
                            out = self.training_step(model, batch, phase, optimizer, ctx)
                            step += 1
                            ctx.steps += 1
                            ctx.log(step=step, loss=float(out.loss.detach()), **out.logs)
                            bar.advance()
            model.eval()
            why = _nonfinite_parameter(model) or self._collapse_reason(model, data, ctx)
            if why:
                self._diverged(model, backup, why)
        except _NonFinite as exc:
            self._diverged(model, backup, str(exc))
        finally:
            self.teardown(ctx)
        model.eval()
        return model

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

    def _diverged(self, model: nn.Module, backup: dict[str, torch.Tensor], why: str) -> None:
        hint = (f"`{self.name}` diverged: {why}. Lower lr or epochs (e.g. --set lr=…), or set "
                "on_divergence=rollback to return the input weights instead.")
        if self.config.on_divergence == "rollback":
            model.load_state_dict(backup)
            warnings.warn(hint + " Rolled back to the input weights.", RuntimeWarning, stacklevel=3)
            return
        raise DivergenceError(hint)


DEFAULT_COLLAPSE_FLOOR = 20.0


class _NonFinite(Exception):
    pass


def _nonfinite_parameter(model: nn.Module) -> str | None:
    for name, p in model.named_parameters():
        if not torch.isfinite(p.detach()).all():
            return f"parameter {name!r} holds non-finite values"
    return None


def infer_num_classes(model: nn.Module, data: UnlearnData | None = None) -> int:
    """``data.num_classes`` when given, else the output size of the model's head (or its last Linear layer)."""
    if data is not None and data.num_classes:
        return int(data.num_classes)
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head.out_features
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise IncompatibleError("cannot infer the number of classes: the model has no `head` or nn.Linear layer; "
                                "pass UnlearnData(num_classes=…)")
    return linears[-1].out_features


@torch.no_grad()
def retain_accuracy_sample(model: nn.Module, retain: Dataset, ctx: RunContext, n: int = 1024) -> float:
    data = as_image_dataset(retain)
    g = torch.Generator().manual_seed(ctx.seed + 7919)
    idx = torch.randperm(len(data), generator=g)[:n].numpy()
    was = model.training
    model.eval()
    correct = 0
    sub = data.subset(idx)
    for x, y in iter_batches(sub, 512, device=ctx.device):
        correct += int((model(x).argmax(1) == y).sum())
    model.train(was)
    return 100.0 * correct / max(len(sub), 1)


__all__ = ["Batch", "GradientConfig", "GradientMethod", "ImageDataset", "Method", "MethodConfig", "Phase",
           "Requirements", "RunContext", "StepOutput", "UnlearnData", "frozen_copy", "infer_num_classes"]
