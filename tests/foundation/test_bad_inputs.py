"""The bad-inputs sweep (issue 11): every case exits non-zero with one clear line, no traceback, no file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("bad_inputs_sweep", Path(__file__).with_name("bad_inputs_sweep.py"))
sweep_mod = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["bad_inputs_sweep"] = sweep_mod
_spec.loader.exec_module(sweep_mod)  # type: ignore[union-attr]


def test_bad_inputs_sweep_in_process(tmp_path):
    outcomes = sweep_mod.sweep(tmp_path)
    assert len(outcomes) >= 60
    report = [f"{o.case.name}: {o.problems} :: {o.err.strip()[-300:]}" for o in outcomes if o.problems]
    assert not report, "\n".join(report)
    assert sum(o.traceback for o in outcomes) == 0 and sum(o.silent for o in outcomes) == 0
