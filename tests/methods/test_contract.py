"""The method contract, checked for every registered method (including ones added later)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from unlearnkit.errors import ConfigError
from unlearnkit.methods import METHODS, create_method
from unlearnkit.testing import CHECKS, RaisingDataset, check_method


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", METHODS.names())
def test_contract(name: str, check) -> None:
    check(name)


@pytest.mark.parametrize("name", METHODS.names())
def test_smoke_config_is_valid(name: str) -> None:
    cls = METHODS.get(name)
    assert isinstance(cls.smoke_config, Mapping)
    create_method(name, **cls.smoke_config)  # builds without a ConfigError


def test_unknown_key_message_is_pinned() -> None:
    with pytest.raises(ConfigError, match=r"unknown option for ft: 'lrr' \(did you mean 'lr'\?\)"):
        create_method("ft", lrr=0.1)


def test_raising_dataset_raises() -> None:
    with pytest.raises(AssertionError, match="read the retain set"):
        len(RaisingDataset())


def test_check_method_reports_a_broken_method() -> None:
    from dataclasses import dataclass

    from unlearnkit.methods.base import Method, MethodConfig, Requirements

    @dataclass(frozen=True, kw_only=True)
    class Cfg(MethodConfig):
        scale: float = 1.0

    class ReadsRetain(Method):
        """Declares it needs no retain set, then reads it and mutates a parameter shape."""

        Config = Cfg
        requires = Requirements(retain=False)

        def unlearn(self, model, data, ctx=None):
            len(data.retain)
            return model

    with pytest.raises(AssertionError, match="check_respects_requirements"):
        check_method(ReadsRetain)


def test_contract_fails_a_method_that_changes_nothing() -> None:
    from unlearnkit.methods.base import Method, MethodConfig

    class DoesNothing(Method):
        """Satisfies every other check: runs, deterministic, leaves its input untouched."""

        Config = MethodConfig

        def unlearn(self, model, data, ctx=None):
            return model

    with pytest.raises(AssertionError, match=r"check_changes_weights: .*identical to the input"):
        check_method(DoesNothing)


@pytest.mark.parametrize("final", ["unlearn", "batches", "total_steps"])
def test_gradient_methods_cannot_replace_the_shared_loop(final: str) -> None:
    from unlearnkit.methods.base import GradientMethod

    with pytest.raises(TypeError, match=f"overrides {final} of GradientMethod"):
        type("MyLoop", (GradientMethod,), {final: lambda self, *a, **k: None})


def test_contract_fails_a_loop_patched_in_after_definition() -> None:
    from unlearnkit.methods.finetune import FineTune
    from unlearnkit.testing import check_final_loop

    class Patched(FineTune):
        pass

    Patched.total_steps = lambda self, data: 1  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="redefines total_steps"):
        check_final_loop(Patched)
