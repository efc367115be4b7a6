"""The job layer: each kind of work a user asks for, assembled once, above the library and below the CLI.

* `unlearnkit.jobs.task` — `Task`, the validated request (dataset, parsed forget spec, split, model source,
  method and resolved config, device, seed, audits), built once at the edge and passed down;
* `unlearnkit.jobs.checkpoints` — `load_checkpoint` / `save_checkpoint` for every kind of model file;
* the job kinds: `train` (`train_job`), `run` (`run_job`: an experiment against the retrained oracle),
  `unlearn` (`unlearn_job`: your checkpoint, no oracle; `unlearn_batch`: the compute of a ledger's ``request
  apply``), `tune` (`tune_job`, around `unlearnkit.tune.tune`) and `audits` (`audit_models`: the extra models of
  strong audits, planned and built by `unlearnkit.audit_models`).

Jobs return values; what they have to say on the way (a cost estimate, a note) goes to an ``on_event``
callback. They never print or prompt: the CLI renders both.

Submodules are imported on use, so ``import unlearnkit.jobs`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable

#: A job's progress messages (notes, cost estimates, warnings): one line of text each.
EventSink = Callable[[str], None]


def no_events(message: str) -> None:
    """The default event sink: drop the message."""


__all__ = ["EventSink", "no_events"]
