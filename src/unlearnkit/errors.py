"""Exception hierarchy: everything unlearnkit raises on purpose derives from `UnlearnkitError`.

Messages say what was wrong, what was expected, and how to fix it.
"""

from __future__ import annotations


class UnlearnkitError(Exception):
    """Base class of every error raised on purpose by unlearnkit."""


class ConfigError(UnlearnkitError, ValueError):
    """A bad hyper-parameter, spec or option value."""


class UnknownNameError(UnlearnkitError, KeyError):
    """A registry lookup for a name that is not registered (with did-you-mean suggestions)."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class IncompatibleError(UnlearnkitError, ValueError):
    """A combination that cannot work (method x split x model x metric); holds every problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__(
            "; ".join(self.problems)
            if len(self.problems) == 1
            else "\n".join(["incompatible inputs:"] + [f"  - {p}" for p in self.problems])
        )


class DataNotFoundError(UnlearnkitError, FileNotFoundError):
    """Dataset files are missing; the message says how to get them."""


class CheckpointError(UnlearnkitError, ValueError):
    """A checkpoint that is corrupt, truncated, or does not match the requested architecture."""


class DivergenceError(UnlearnkitError, RuntimeError):
    """An unlearning run produced a non-finite loss or collapsed the model."""


class MissingDependencyError(UnlearnkitError, ImportError):
    """An optional extra is not installed; the message gives the pip command."""
