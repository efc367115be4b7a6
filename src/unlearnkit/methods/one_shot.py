"""The template of one-shot methods: measure, then edit the weights once (no optimizer loop).

SSD, KoDGE, L-CODEC, Fisher Forgetting, Influence Unlearning, Weight Filtering and Retrain share one
``unlearn``: check compatibility, move the model to the run's device, ``prepare`` (statistics, importances,
projections: the setup time of the run), mark ``setup_end``, ``edit``, return the model in eval mode.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, Generic, TypeVar

from torch import nn

from .context import RunContext
from .contract import Method, UnlearnData

Prepared = TypeVar("Prepared")


class OneShotMethod(Method, Generic[Prepared]):
    """A method that edits the weights once: ``prepare`` (optional) measures, ``edit`` (required) changes them.

    ``unlearn`` is final (redefining it in a subclass raises `TypeError`): it runs ``check_compatible``, moves
    the model to ``ctx.device``, calls ``prepared = prepare(model, data, ctx)``, emits ``setup_end`` (what came
    before is timed as setup), calls ``edit(model, data, prepared, ctx)`` and returns its model in eval mode.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "unlearn" in vars(cls):
            raise TypeError(
                f"{cls.__name__} overrides unlearn of OneShotMethod, the shared prologue; put the measurements "
                "in prepare(model, data, ctx) and the weight change in edit(model, data, prepared, ctx)"
            )

    def prepare(self, model: nn.Module, data: UnlearnData, ctx: RunContext) -> Prepared:
        """Measure what the edit needs (timed as setup); the default measures nothing."""
        return None  # type: ignore[return-value]

    @abstractmethod
    def edit(self, model: nn.Module, data: UnlearnData, prepared: Prepared, ctx: RunContext) -> nn.Module:
        """Change the weights of ``model`` (in place) using what ``prepare`` returned; return the model."""

    def unlearn(self, model: nn.Module, data: UnlearnData, ctx: RunContext | None = None) -> nn.Module:
        ctx = ctx or RunContext.local()
        self.check_compatible(model, data, ctx)
        model.to(ctx.device)
        prepared = self.prepare(model, data, ctx)
        ctx.emit("setup_end")
        model = self.edit(model, data, prepared, ctx)
        model.eval()
        return model


__all__ = ["OneShotMethod"]
