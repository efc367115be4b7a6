"""The shared, final loop of gradient methods: `GradientMethod`.

A method file reads like the paper's algorithm box: it declares a frozen, typed ``Config`` and its
``requires``, describes its schedule as `Phase`s and overrides a few hooks. The loop services (device,
progress, in-run watch, divergence safety, deferred logging) live here and in `RunContext`; seeding, copying
and timing live in `unlearnkit.runner`.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.datasets import ImageDataset
from ..data.loading import cycle_batches, sample_batch, stream_batches
from ..errors import DivergenceError, IncompatibleError
from ..progress import progress_bar
from ..training import make_optimizer
from .context import NonFiniteLossError, RunContext, retain_accuracy_sample
from .contract import Batch, GradientConfig, Method, MethodConfig, Phase, StepOutput, UnlearnData

#: The parts of `GradientMethod` that are the shared loop: a subclass that redefines one is refused.
FINAL_LOOP_METHODS = ("unlearn", "batches", "total_steps")


class GradientMethod(Method):
    """Template for methods that update weights with an optimizer over batches; ``unlearn`` is the shared loop.

    A method describes its schedule as data (``schedule`` yields `Phase`s) and overrides hooks: ``loss``
    (required); optionally ``setup``, ``after_backward``, ``after_step``, ``make_optimizer``, ``lr_at``,
    ``training_step``, ``on_phase_start``, ``on_epoch_end``, ``finalize``, ``teardown``. ``unlearn``,
    ``batches`` and ``total_steps`` are final (defining them in a subclass raises `TypeError`). ``train_mode``
    says whether BatchNorm runs in train mode during updates.
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

    def on_phase_start(self, model: nn.Module, phase: Phase, optimizer: torch.optim.Optimizer, ctx: RunContext) -> None:
        """Called when a phase starts, before its first batch (after the loop applied ``fresh_optimizer``)."""

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
        if which == "partner" and phase.partner is not None:
            ds = phase.partner_data if phase.partner_data is not None else getattr(data, phase.partner)
            if ds is None or len(ds) == 0:  # type: ignore[arg-type]
                raise IncompatibleError(
                    f"`{self.name}` phase {phase.name!r} reads a partner stream of the {phase.partner} set, "
                    "but none was given"
                )
            return ds
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
        if phase.partner is not None:
            assert partner is not None  # _source raises for a missing partner set
            partners = cycle_batches(partner, bs, num_workers=ctx.num_workers, **kw)
            held = None
            for t, ab in enumerate(stream):
                pb = next(partners) if t % phase.partner_every == 0 else (held if phase.hold else None)
                held = pb
                yield Batch(**{"mixed" if src == "mixed" else src: ab, phase.partner: pb})
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
                if phase.fresh_optimizer:
                    optimizer.state.clear()
                self.on_phase_start(model, phase, optimizer, ctx)
                for e in range(1 if phase.steps is not None else phase.epochs):
                    passes += 1
                    ctx.epoch = phase.epoch + e if phase.epoch is not None else passes
                    complete = True
                    for batch in self.batches(phase, data, ctx):
                        if (max_steps is not None and step >= max_steps) or ctx.should_stop():
                            complete = False
                            break
                        lr = self.lr_at(step, total, ctx.epoch)
                        if phase.lr is not None:  # the phase's base rate, scaled by the schedule's decay
                            lr = phase.lr * (lr / self.config.lr if self.config.lr > 0 else 1.0)
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
        if watch is not None:
            watch.finish(model, ctx)

    def _watch(self, model: nn.Module, data: UnlearnData, ctx: RunContext, total: int) -> _Watch | None:
        """The in-run stopping rules of the config (retain-drop guard, forget-accuracy target), or None."""
        c = self.config
        drop = c.max_retain_drop
        # On for every gradient method. Ascent-type methods (and any explicit max_retain_drop) stop at the first
        # check beyond the limit; descent methods by default judge only where the run ends, since impair-then-
        # repair schedules (RL/SalUn's forget pass, ℓ1's pruning) pass through low retain accuracy on purpose.
        in_run = drop is not None or self.guard_divergence
        if drop is None:
            drop = DEFAULT_MAX_RETAIN_DROP if self.guard_divergence else DEFAULT_MAX_RETAIN_DROP_DESCENT
        elif drop >= 100:  # 100 points can never be lost: the guard is off (and keeps no copy)
            drop = None
        probe = data.retain if self.requires.retain else kept_classes(data.test, data.forget_classes)
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
            in_run=in_run,
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
#: The same guard for every other gradient method (issue 24 item 7: no silent wreck), as wide as the margin at
#: which `unlearnkit.outcome` calls a run wrecked.
DEFAULT_MAX_RETAIN_DROP_DESCENT = 10.0


def kept_classes(test: Dataset | None, forget_classes: tuple[int, ...]) -> Dataset | None:
    """``test`` without the images of ``forget_classes`` (an in-memory `ImageDataset`; other Datasets as given):
    held-out accuracy that forgetting a class must not lower."""
    if test is None or not forget_classes or not isinstance(test, ImageDataset):
        return test
    keep = ~torch.isin(test.targets, torch.tensor(forget_classes, dtype=test.targets.dtype))
    return test.subset(torch.nonzero(keep).flatten().numpy())


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
    in_run: bool = True  # False: a retain drop is acted on only where the run ends (`finish`)
    start_acc: float = math.nan
    last: tuple[int, float] | None = None  # (step, retain accuracy) of the latest check
    good: dict[str, torch.Tensor] | None = None

    def _keep(self, model: nn.Module) -> None:
        if self.drop is not None:
            self.good = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def start(self, model: nn.Module, ctx: RunContext) -> None:
        if self.probe is not None:
            self.start_acc = retain_accuracy_sample(model, self.probe, ctx)
        self._keep(model)

    def check(self, model: nn.Module, ctx: RunContext) -> bool:
        """True when the run must stop here (``ctx.stop_reason`` says why; weights restored on a retain drop).

        The forget target counts as reached only while retain accuracy is within ``min(drop, 10)`` points of its
        start (10 with the guard off): a collapsed model is never on target.
        """
        acc = math.nan
        if self.probe is not None:
            acc = retain_accuracy_sample(model, self.probe, ctx)
            self.last = (ctx.steps, acc)
        beyond = self.drop is not None and self.probe is not None and not acc >= self.start_acc - self.drop
        if beyond and self.in_run:
            if self.good is not None:
                model.load_state_dict(self.good)
            ctx.report["reached_target"] = False
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
            margin = min(self.drop if self.drop is not None else math.inf, DEFAULT_MAX_RETAIN_DROP_DESCENT)
            retain_ok = math.isnan(acc) or acc >= self.start_acc - margin
            if forget_acc <= goal + self.tolerance and retain_ok:
                ctx.report["reached_target"] = True
                ctx.stop_reason = (
                    f"forget accuracy {forget_acc:.1f}% reached its target {goal:.1f}% "
                    f"(+{self.tolerance:g}) at step {ctx.steps}"
                )
                return True
        if not beyond:
            self._keep(model)
        return False

    def finish(self, model: nn.Module, ctx: RunContext) -> None:
        """Where a run ended beyond the retain limit (``in_run`` False), go back to the last check within it."""
        if self.in_run or self.drop is None or self.probe is None:
            return
        # the last check may have measured these very weights (a check ends every complete pass)
        fresh = self.last is not None and self.last[0] == ctx.steps
        acc = self.last[1] if fresh and self.last else retain_accuracy_sample(model, self.probe, ctx)
        if acc >= self.start_acc - self.drop:
            return
        if self.good is not None:
            model.load_state_dict(self.good)
        ctx.report["reached_target"] = False
        ctx.stop_reason = (
            f"the run ended with retain accuracy {acc:.1f}% (from {self.start_acc:.1f}%, more than {self.drop:g} "
            "points lower); restored the last check within it"
        )
        warnings.warn(
            f"Retain guard: {ctx.stop_reason}. Lower lr or epochs, or raise max_retain_drop (100 turns it off).",
            RuntimeWarning,
            stacklevel=3,
        )


def _nonfinite_parameter(model: nn.Module) -> str | None:
    bad = next((n for n, p in model.named_parameters() if not torch.isfinite(p.detach()).all()), None)
    return f"parameter {bad!r} holds non-finite values" if bad else None
