"""The run context: the only way a method reaches the outside world (device, RNG, original model, logging,
budget, precision, events, cache), and the measurements a loop takes through it.
"""

from __future__ import annotations

import contextlib
import copy
import time
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..data.datasets import ImageDataset
from ..data.loading import as_image_dataset, iter_batches
from ..device import resolve_device
from ..errors import ConfigError


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
        #: Structured facts a method states about its run (e.g. ``reached_target``, the targets `auto` used);
        #: the runner copies them to ``RunResult.report`` and the record. ``reached_target`` False = stopped
        #: before its goal (the run's outcome is then ``partial``).
        self.report: dict[str, Any] = {}
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
