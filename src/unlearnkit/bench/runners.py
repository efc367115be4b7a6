"""The bench's run functions: a registry of named runners (plugins add theirs through entry points), and
`resolve_runner`, which a spec's ``runner`` key goes through (the default is `unlearnkit.pipeline.run_experiment`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..errors import ConfigError


class _HasRecord(Protocol):
    """What `unlearnkit.pipeline.run_experiment` returns (an ``Experiment``): the record plus the model."""

    record: dict[str, Any]


# A run function returns the record, or an object holding it as ``.record`` (the runner takes either).
RunnerFn = Callable[..., "dict[str, Any] | _HasRecord"]


RUNNER_ENTRY_POINTS = "unlearnkit.bench_runners"
_RUNNERS: dict[str, RunnerFn] = {}


def register_runner(name: str, fn: RunnerFn) -> None:
    """Register a run function under ``name`` (what a spec's ``runner`` key or ``$UNLEARNKIT_BENCH_RUNNER`` names).

    Installed plugins register theirs through the entry-point group ``unlearnkit.bench_runners``; nothing else is
    ever imported by name, so a spec cannot make the bench import an arbitrary module.
    """
    n: object = name  # checked as any object: plugins call this with whatever they pass
    if not isinstance(n, str) or not n or ":" in n:
        raise ConfigError(f"a bench runner name must be a plain non-empty name, got {name!r}")
    _RUNNERS[name] = fn


def unregister_runner(name: str) -> None:
    _RUNNERS.pop(name, None)


def runner_names() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(set(_RUNNERS) | {ep.name for ep in entry_points(group=RUNNER_ENTRY_POINTS)})


def resolve_runner(ref: str | None) -> RunnerFn:
    """The function that performs one run: a registered runner name, or `unlearnkit.pipeline.run_experiment`.

    Names come from `register_runner` or the ``unlearnkit.bench_runners`` entry points of installed plugins; a
    ``module:function`` reference is refused (it would import any installed module while a spec is validated).
    """
    if ref is None:
        try:
            from ..pipeline import run_experiment
        except ImportError as exc:
            raise ConfigError(f"unlearnkit.pipeline.run_experiment is not available: {exc}") from None
        return run_experiment
    if ref in _RUNNERS:
        return _RUNNERS[ref]
    if ":" in ref:
        raise ConfigError(
            f"{ref!r} is a module:function reference, which is not accepted; name a runner registered "
            f"by an installed plugin (entry-point group {RUNNER_ENTRY_POINTS!r}), or drop the key"
        )
    from importlib.metadata import entry_points

    eps = [ep for ep in entry_points(group=RUNNER_ENTRY_POINTS) if ep.name == ref]
    if not eps:
        known = runner_names()
        raise ConfigError(
            f"unknown bench runner {ref!r}; registered runners: {', '.join(known) or 'none'} "
            f"(plugins add them through the entry-point group {RUNNER_ENTRY_POINTS!r})"
        )
    try:
        fn = eps[0].load()
    except Exception as exc:
        raise ConfigError(f"the bench runner plugin {ref!r} failed to load: {type(exc).__name__}: {exc}") from None
    if not callable(fn):
        raise ConfigError(f"the bench runner plugin {ref!r} is not callable")
    return fn


__all__ = ["RUNNER_ENTRY_POINTS", "RunnerFn", "register_runner", "resolve_runner", "runner_names", "unregister_runner"]
