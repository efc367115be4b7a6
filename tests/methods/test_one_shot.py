"""The one-shot template: one prologue for methods that edit the weights once."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearnkit.errors import IncompatibleError
from unlearnkit.methods import get_method_class
from unlearnkit.methods.base import MethodConfig, OneShotMethod, RunContext, UnlearnData
from unlearnkit.testing import tiny_data, tiny_model


class _Scale(OneShotMethod[float]):
    """Measures the weight norm in ``prepare`` and halves the head in ``edit``; records the order of events."""

    Config = MethodConfig
    name = "scale"

    def __init__(self) -> None:
        super().__init__()
        self.trace: list[str] = []

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> float:
        self.trace.append(f"prepare on {next(model.parameters()).device.type}, events {sorted(ctx.events)}")
        model.train()
        return 0.5

    def edit(self, model: nn.Module, data: UnlearnData, prepared: float, ctx: RunContext) -> nn.Module:
        self.trace.append(f"edit with {prepared}, events {sorted(ctx.events)}")
        with torch.no_grad():
            model.head.weight.mul_(prepared)  # type: ignore[operator, union-attr]
        return model


def test_the_template_checks_prepares_marks_the_setup_end_edits_and_returns_an_eval_model() -> None:
    model, m = tiny_model(), _Scale()
    before = model.head.weight.detach().clone()  # type: ignore[union-attr]
    out = m.unlearn(model, tiny_data("random:0.25"), RunContext("cpu", 0))
    assert m.trace == ["prepare on cpu, events []", "edit with 0.5, events ['setup_end']"]
    assert out is model and not out.training
    assert torch.equal(out.head.weight, 0.5 * before)  # type: ignore[union-attr]


def test_the_template_refuses_incompatible_data_before_prepare() -> None:
    data = tiny_data("random:0.25")
    m = _Scale()
    with pytest.raises(IncompatibleError, match="retain"):
        m.unlearn(tiny_model(), UnlearnData(forget=data.forget), RunContext("cpu", 0))
    assert m.trace == []


def test_a_one_shot_method_may_not_redefine_unlearn() -> None:
    with pytest.raises(TypeError, match="overrides unlearn of OneShotMethod"):

        class _Bad(_Scale):
            def unlearn(self, model, data, ctx=None):  # type: ignore[no-untyped-def]
                return model


@pytest.mark.parametrize("name", ["ssd", "kodge", "lcodec", "ff", "iu", "weight_filtering", "retrain"])
def test_the_one_shot_methods_use_the_template(name: str) -> None:
    cls = get_method_class(name)
    assert issubclass(cls, OneShotMethod) and "unlearn" not in vars(cls)
