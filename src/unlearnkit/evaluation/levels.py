"""Audit levels: ``none``, ``standard`` (the default) and ``strong``, or audit names for fine control.

`resolve_audits` is the one function every entry point (`evaluate`, `unlearnkit run`, ``bench``, ``eval``,
``unlearn``) resolves an ``--audits`` value through:

* ``standard`` = population MIAs (AUC, TPR at 1 % / 0.1 % FPR), the linear probe and CKA to the retrained
  model; a few seconds per model, no extra model needed (CKA only when a retrained model exists).
* ``strong`` = standard + relearn time, the oracle-distribution margin score (``oracle_margins``, KLoM-style),
  U-LiRA-lite and the competition-style ε (``competition_lite``); these need extra models, which
  `unlearnkit.audit_models.build_audit_models` trains through the model cache (cost printed first).
* a comma-separated mix of levels and audit names (``standard,relearn_time``); ``-name`` removes one.

Audits that come from a *level* are dropped quietly when their requirements are missing (no retrained model,
no ``forward_features``, no extra models); audits *named* explicitly are checked and refused before compute.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError
from . import oracle_margins as _oracle_margins  # noqa: F401  (registers the oracle_margins audit)
from .audits import AUDITS

__all__ = ["AUDIT_LEVELS", "DEFAULT_AUDIT_LEVEL", "applicable_audits", "resolve_audits", "split_audits"]

DEFAULT_AUDIT_LEVEL = "standard"
STANDARD = ("mia_population", "linear_probe", "cka")
STRONG_EXTRA = ("relearn_time", "oracle_margins", "ulira_lite", "competition_lite")
AUDIT_LEVELS: dict[str, tuple[str, ...]] = {
    "none": (),
    "standard": STANDARD,
    "strong": (*STANDARD, *STRONG_EXTRA),
}

# what an extra model list is, in words (for errors a user can act on)
EXTRA_HELP = {
    "ulira": "U-LiRA shadow models (run it through `unlearnkit run --audits strong`, which trains them)",
    "unlearned_runs": "several unlearned runs of the method (`unlearnkit run --audits strong` makes them)",
    "retrained_runs": "several retrained oracles (`unlearnkit run --oracles K` or --audits strong trains them)",
}


def _items(level_or_names: str | Sequence[str] | None) -> list[str]:
    if level_or_names is None:
        return [DEFAULT_AUDIT_LEVEL]
    raw = level_or_names.split(",") if isinstance(level_or_names, str) else list(level_or_names)
    items = [str(x).strip() for x in raw if str(x).strip()]
    return items


def _unknown(name: str) -> ConfigError:
    known = [*AUDIT_LEVELS, *AUDITS.names()]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"unknown audit level or audit {name!r}{hint} (levels: {', '.join(AUDIT_LEVELS)}; audits: "
        f"{', '.join(AUDITS.names())})"
    )


def split_audits(level_or_names: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """``(from_levels, named)``: audits that a level brought in (dropped quietly when they cannot run) and
    audits named explicitly (refused when they cannot run). ``None`` is the default level (standard)."""
    from_levels: list[str] = []
    named: list[str] = []
    removed: set[str] = set()
    for item in _items(level_or_names):
        drop = item.startswith("-")
        n = item[1:].strip() if drop else item
        key = n.lower()
        if key in AUDIT_LEVELS and not drop:
            from_levels += AUDIT_LEVELS[key]
        elif n in AUDITS:
            c = AUDITS.canonical(n)
            (removed.add(c) if drop else named.append(c))
        else:
            raise _unknown(n)
    named = [a for a in dict.fromkeys(named) if a not in removed]
    from_levels = [a for a in dict.fromkeys(from_levels) if a not in removed and a not in named]
    return from_levels, named


def resolve_audits(level_or_names: str | Sequence[str] | None) -> list[str]:
    """The audit names a level, a list of names, or a comma-separated mix of both stands for.

    >>> resolve_audits("standard")
    ['mia_population', 'linear_probe', 'cka']
    >>> resolve_audits("none")
    []
    >>> resolve_audits("standard,relearn_time,-cka")
    ['mia_population', 'linear_probe', 'relearn_time']

    Raises:
        ConfigError: an unknown level or audit name (with a did-you-mean suggestion).
    """
    from_levels, named = split_audits(level_or_names)
    return [*from_levels, *named]


def applicable_audits(
    names: Iterable[str],
    roles: Iterable[str],
    extra_models: Mapping[str, Any] | None,
    classwise: bool,
    models: Mapping[str, Any] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Split level-derived audits into those that can run here and ``{name: why not}`` for the others."""
    roles = set(roles)
    extra = extra_models or {}
    keep: list[str] = []
    skipped: dict[str, str] = {}
    for name in names:
        a = AUDITS.get(name)
        missing_roles = sorted(a.needs_models - roles)
        missing_extra = [e for e in a.needs_extra if not extra.get(e)]
        no_feats = bool(a.needs_features) and any(not hasattr(m, "forward_features") for m in (models or {}).values())
        if missing_roles:
            skipped[name] = f"needs the {', '.join(missing_roles)} model"
        elif missing_extra:
            skipped[name] = "needs " + "; ".join(EXTRA_HELP.get(e, e) for e in missing_extra)
        elif a.classwise_only and not classwise:
            skipped[name] = "needs class-wise forgetting"
        elif no_feats:
            skipped[name] = "a model has no forward_features() (penultimate features)"
        else:
            keep.append(name)
    return keep, skipped
