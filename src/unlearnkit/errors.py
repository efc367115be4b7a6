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


class IncompleteUnlearningError(UnlearnkitError, RuntimeError):
    """A run that did not finish the deletion (outcome ``partial``, ``no_op`` or ``wrecked``) where a complete one
    was required; nothing was written and a ledger's requests stay pending."""

    def __init__(self, outcome: str, detail: str, what: str) -> None:
        self.outcome, self.detail = outcome, detail
        super().__init__(
            f"the deletion was not completed (outcome {outcome}{': ' + detail if detail else ''}); {what}. "
            "Try another method (--method) or options (--set), or pass --allow-partial to keep the result anyway "
            "(its outcome is recorded)"
        )


class WriteFailedError(UnlearnkitError, RuntimeError):
    """Writing a result failed after the work was done (a full disk, a lost database connection); the message says
    what was kept and what to do."""


class MissingDependencyError(UnlearnkitError, ImportError):
    """An optional extra is not installed; the message gives the pip command."""
