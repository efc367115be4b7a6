"""The index-list grammar of deletion requests: ``3,17,40-49`` or ``@FILE``.

``@FILE`` is read like the ``indices:FILE`` forget spec (a JSON list of integers, an object with key
``"indices"``, or one integer per line): floats, booleans, text, binary data and empty files are refused, never
truncated. Ranges are inclusive and must run upwards (``40-30`` is refused, not dropped). A range is checked
against ``size`` (the training-set size, when known) or against `MAX_RANGE` before it is expanded, so a typo
such as ``0-99999999999`` is refused instead of allocating billions of integers.
"""

from __future__ import annotations

from ..errors import ConfigError

#: The most indices one range may hold when the training-set size is not known (no dataset is that large).
MAX_RANGE = 100_000_000
_HELP = "e.g. 3,17,40-49 or @FILE"


def parse_index_list(text: str, *, size: int | None = None, what: str = "--indices") -> list[int]:
    """Training indices of ``text`` in the order given; `ConfigError` naming the bad part and the fix.

    Args:
        text: ``3,17,40-49`` (inclusive, increasing ranges) or ``@FILE``.
        size: the training-set size; when given, every index must lie in ``[0, size)``.
        what: how the caller names the value in messages (a CLI flag or a parameter).
    """
    t: object = text  # checked as any object: the API is called with whatever the user passes
    if not isinstance(t, str) or not t.strip():
        raise ConfigError(f"{what} is empty; pass training indices ({_HELP})")
    text = text.strip()
    if text.startswith("@"):
        from .splits import _read_indices_file

        if not text[1:]:
            raise ConfigError(f"{what} @ needs a file name, e.g. @ids.txt (a JSON list or one index per line)")
        out = list(_read_indices_file(text[1:]))
    else:
        out = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            lo_s, dash, hi_s = part.partition("-")
            is_range = bool(dash and lo_s)  # a leading "-" is a negative number, refused as out of range
            try:
                lo, hi = (int(lo_s), int(hi_s)) if is_range else (int(part), int(part))
            except ValueError:
                raise ConfigError(f"{what} must be integers ({_HELP}), got {part!r} in {text[:80]!r}") from None
            if not is_range:
                out.append(lo)
                continue
            if hi < lo:
                raise ConfigError(f"{what}: range {part!r} runs backwards; write it low-high, e.g. {hi}-{lo}")
            limit = size if size is not None else MAX_RANGE
            if hi - lo + 1 > limit or (size is not None and (lo < 0 or hi >= size)):
                where = f" [0, {size})" if size is not None else f" (more than {limit:,} indices)"
                raise ConfigError(f"{what}: range {part!r} reaches outside the training set{where}; check its bounds")
            out.extend(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"{what} selects no index; pass training indices ({_HELP})")
    if size is not None:
        bad = [i for i in out if not 0 <= i < size]
        if bad:
            raise ConfigError(f"{what}: index {bad[0]} is outside the training set [0, {size})")
    return out


__all__ = ["MAX_RANGE", "parse_index_list"]
