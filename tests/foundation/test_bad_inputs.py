"""The bad-inputs sweep (issues 11 and 24): every bad input exits non-zero with one clear line, no traceback, no
file written and no file of a registered model directory changed (nor its ledger rows), also under injected
failures of the OS and the database; every case that must succeed does, exactly."""

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
    assert len(outcomes) >= 100
    report = [f"{o.case.name}: {o.problems} :: {o.err.strip()[-300:]}" for o in outcomes if o.problems]
    assert not report, "\n".join(report)
    verdicts = [o.verdict for o in outcomes]
    assert verdicts.count("traceback") == verdicts.count("silent wrong") == verdicts.count("data loss") == 0
    engineer = [o for o in outcomes if o.case.guard or o.case.ok]
    assert len(engineer) >= 80 and any(o.case.ok for o in engineer)  # issue 24's surfaces are in the sweep
    faults = {o.case.fault.partition(":")[0] for o in outcomes if o.case.fault}  # and its OS and database failures
    assert {"read_only", "disk_full_model", "disk_full_commit", "no_module"} <= faults, faults
