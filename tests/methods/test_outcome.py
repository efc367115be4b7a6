"""No silent no-op, no silent wreck (issue 24 item 7): every run's outcome, measured against its input."""

from __future__ import annotations

import warnings

import pytest
import torch

from unlearnkit.methods import create_method
from unlearnkit.outcome import WRECK_MARGIN, assess, relative_change
from unlearnkit.runner import run_method
from unlearnkit.testing import tiny_data, tiny_model


def _run(method: str, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return run_method(create_method(method, **kw), tiny_model(trained=True), tiny_data(), device="cpu")


def test_a_run_that_changes_nothing_is_a_no_op() -> None:
    res = _run("ft", epochs=1, lr=0.0, weight_decay=0.0, batch_size=32)
    assert res.outcome == "no_op" and "input's" in res.outcome_detail
    assert res.report["outcome"]["weight_change"] == 0.0


def test_a_run_that_loses_retain_accuracy_is_wrecked() -> None:
    res = _run("ga", epochs=3, lr=1.0, batch_size=32, max_retain_drop=100)  # guard off: nothing stops it
    out = res.report["outcome"]
    assert res.outcome == "wrecked"
    assert out["retain_acc_after"] < out["retain_acc_before"] - WRECK_MARGIN


@pytest.mark.parametrize(("method", "drop"), [("ft", 10.0), ("rl", 10.0), ("salun", 10.0), ("ga", 5.0)])
def test_the_retain_guard_is_on_by_default_for_every_gradient_method(method: str, drop: float) -> None:
    from unlearnkit.methods.base import RunContext

    m, data = create_method(method, epochs=1, batch_size=32), tiny_data()
    watch = m._watch(tiny_model(trained=True), data, RunContext(), total=10)
    assert watch is not None and watch.drop == drop
    off = create_method(method, epochs=1, batch_size=32, max_retain_drop=100)
    assert off._watch(tiny_model(trained=True), data, RunContext(), total=10) is None  # 100 = off, no copy kept


def test_a_retain_drop_stop_makes_the_run_partial() -> None:
    res = _run("ga", epochs=3, lr=1.0, batch_size=32, check_every=1)  # the default 5-point guard stops it
    assert res.stop_reason is not None and "retain accuracy fell" in res.stop_reason
    assert res.report["reached_target"] is False
    assert res.outcome in ("partial", "no_op")  # no_op when the last good check was the start itself


def test_a_normal_run_is_complete() -> None:
    res = _run("ft", epochs=1, batch_size=32)
    assert res.outcome == "complete" and res.outcome_detail == ""


def test_a_collapsed_model_never_stops_on_target() -> None:
    # GA drives forget accuracy to 0 by collapsing the model: with the guard off (100) the target stop must
    # still refuse it, so the run goes on to its end instead of reporting "reached its target"
    res = _run("ga", epochs=3, lr=1.0, batch_size=32, max_retain_drop=100, stop_at_target=True, check_every=1)
    assert "reached its target" not in (res.stop_reason or "")
    assert res.outcome == "wrecked"


def test_relative_change_and_assess_on_hand_made_weights() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert relative_change(before, model) == 0.0
    with torch.no_grad():
        model.weight.add_(torch.tensor([[0.0, 0.5]]))
    assert relative_change(before, model) == pytest.approx(0.1)  # 0.5 / 5
    assert assess(before, model, None, {"reached_target": False}, None).kind == "partial"
    assert assess(before, model, None, {}, None).kind == "complete"
    # a retain drop far beyond the wreck margin is a wreck, unless the method's deletion carries a guarantee
    drop = lambda m, ds: 10.0 if m is model else 90.0  # noqa: E731  (input 90 %, output 10 %)
    assert assess(before, model, [0], {}, drop).kind == "wrecked"
    guaranteed = assess(before, model, [0], {"guarantee": "exact ridge head deletion"}, drop)
    assert guaranteed.kind == "complete" and "exact ridge head deletion" in guaranteed.detail
