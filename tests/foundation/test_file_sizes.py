"""Files stay small enough to read in one sitting: no module of the package above 600 lines (issue 23)."""

from __future__ import annotations

from pathlib import Path

import unlearnkit

MAX_LINES = 600


def test_no_source_file_above_the_limit() -> None:
    root = Path(unlearnkit.__file__).resolve().parent
    sizes = {str(p.relative_to(root)): len(p.read_text(encoding="utf-8").splitlines()) for p in root.rglob("*.py")}
    assert len(sizes) > 50  # the walk found the package
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not too_long, f"split these by concern (at most {MAX_LINES} lines each): {too_long}"
