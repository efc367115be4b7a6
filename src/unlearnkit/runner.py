"""The one runner of a method: copy the model, fork and seed the RNGs, time setup and update, sync at the edges.

`unlearnkit.unlearn`, the experiment pipeline, `tune` and the test helpers all go through `run_method`, so a
method behaves (and is timed) the same way wherever it is called from.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset

from .device import resolve_device
from .errors import ConfigError
from .methods.base import Method, RunContext, UnlearnData, frozen_copy


@dataclass
class RunResult:
    """What one run produced: the unlearned model, its timings (seconds) and the logged history."""

    model: nn.Module
    setup_seconds: float
    update_seconds: float
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    stop_reason: str | None = None  # why an in-run rule stopped the method early (None: it ran its schedule)
    #: ``complete`` | ``partial`` | ``no_op`` | ``wrecked``, measured against the input (`unlearnkit.outcome`)
    outcome: str = "complete"
    outcome_detail: str = ""
    report: dict[str, Any] = field(default_factory=dict)  # what the method stated (ctx.report) + the outcome numbers

    @property
    def seconds(self) -> float:
        return self.setup_seconds + self.update_seconds


def run_method(
    method: Method,
    model: nn.Module,
    data: UnlearnData,
    *,
    device: str | torch.device = "auto",
    seed: int = 0,
    original: nn.Module | None = None,
    progress: bool | None = False,
    copy_model: bool = True,
    max_steps: int | None = None,
    log_every: int | None = None,
    amp: Literal["bf16"] | None = None,
    num_workers: int = 0,
) -> RunResult:
    """Run ``method`` on (a copy of) ``model`` and return the result with its timings.

    Every random draw is reproducible from ``seed``: the method's ``ctx.rng`` is seeded with it, and the
    global CPU and CUDA generators are forked (restored afterwards) and seeded with it too, for code that
    draws from them (e.g. ``reset_parameters``). ``original`` (default: ``model``) becomes the frozen teacher
    ``ctx.original`` for methods that declare ``requires.original_model``. The device is synchronised only
    at the start, at the end of ``setup`` (``ctx.emit("setup_end")``) and at the end. After the timed part,
    the result's ``outcome`` (``complete`` / ``partial`` / ``no_op`` / ``wrecked``, `unlearnkit.outcome`) is
    measured against the input weights, so a run that did nothing or wrecked the model says so.

    Example:
        >>> from unlearnkit.methods import create_method
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> res = run_method(create_method("ft", epochs=1), tiny_model(), tiny_data(), device="cpu")
        >>> res.steps > 0 and res.seconds >= res.update_seconds
        True
    """
    dev = resolve_device(device)
    teacher = None
    if method.requires.original_model:
        teacher = frozen_copy(model if original is None else original)
    ctx = RunContext(
        dev,
        seed,
        original=teacher,
        progress=progress,
        max_steps=max_steps,
        log_every=log_every,
        amp=amp,
        num_workers=num_workers,
    )
    work = copy.deepcopy(model) if copy_model else model
    # the input's weights for the outcome check: the untouched input itself, or a CPU copy when run in place
    before = (
        model.state_dict()
        if copy_model
        else {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    )
    devices: list[Any] = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        ctx.synchronize()
        t0 = time.perf_counter()
        out = method.unlearn(work, data, ctx)
        ctx.synchronize()
        t1 = time.perf_counter()
    t_setup = min(max(ctx.events.get("setup_end", t0) - t0, 0.0), t1 - t0)
    outcome = _outcome(method, before, out, data, ctx)
    return RunResult(
        out,
        setup_seconds=t_setup,
        update_seconds=(t1 - t0) - t_setup,
        steps=ctx.steps,
        history=ctx.history,
        stop_reason=ctx.stop_reason,
        outcome=outcome.kind,
        outcome_detail=outcome.detail,
        report={**ctx.report, "outcome": outcome.as_dict()},
    )


def _outcome(
    method: Method, before: dict[str, torch.Tensor], out: nn.Module, data: UnlearnData, ctx: RunContext
) -> Any:
    """`unlearnkit.outcome.assess` on the retain set (held-out images of the kept classes for a method that must
    not read the retain set); after the timed part of the run."""
    from .methods.base import retain_accuracy_sample
    from .methods.loop import kept_classes
    from .outcome import assess

    probe = data.retain if method.requires.retain else kept_classes(data.test, data.forget_classes)
    was = out.training
    result = assess(before, out, probe, ctx.report, lambda m, ds: retain_accuracy_sample(m, ds, ctx))
    out.train(was)
    return result


def unlearn(
    model: nn.Module,
    forget: Dataset,
    retain: Dataset | None = None,
    method: str | Method = "auto",
    *,
    test: Dataset | None = None,
    original: nn.Module | None = None,
    split: Any = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool | None = False,
    **config: Any,
) -> nn.Module:
    """Unlearn ``forget`` from a copy of ``model``; the input model is never modified.

    ``method`` is a registered name (``config`` overrides its options) or a built `Method`. The default, ``auto``,
    needs no tuning and no retrained model, but needs held-out data the model never trained on (``test=…``):
    its targets come from it (see `unlearnkit.methods.auto.Auto`).

    Example:
        >>> import unlearnkit, torch
        >>> from unlearnkit.testing import tiny_data, tiny_model
        >>> data = tiny_data()
        >>> out = unlearnkit.unlearn(tiny_model(), data.forget, data.retain, method="ft", epochs=1, device="cpu")
        >>> isinstance(out, torch.nn.Module)
        True
    """
    from .methods import create_method

    if config and not isinstance(method, str):
        raise ConfigError("pass config options only with a method name, or build the method with create_method")
    m = create_method(method, **config) if isinstance(method, str) else method
    data = UnlearnData(forget=forget, retain=retain, test=test, split=split)
    return run_method(m, model, data, device=device, seed=seed, original=original, progress=progress).model


__all__ = ["RunResult", "run_method", "unlearn"]
