"""Fixtures of the bench tests: fake methods in the registry, a spec writer and fake records."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from unlearnkit.bench._testing import FAKE_RUNNER, fake_methods_registered


@pytest.fixture(autouse=True)
def fake_methods():
    """``fake_any`` (class and random forgetting) and ``fake_class_only`` exist only during each test."""
    with fake_methods_registered():
        yield


SPEC = """
name = "tiny"
runner = "{runner}"

[grid]
datasets = ["synthetic"]
models = ["small_cnn"]
forget = ["class:0", "random:0.1"]
seeds = {seeds}

[[methods]]
name = "fake_any"

[[methods]]
name = "fake_any"
set = {{ lr = 0.5 }}
label = "fake_any-lr0.5"

[[methods]]
name = "fake_class_only"
"""


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec file; default: the tiny grid above (2 forget specs × seeds × 3 methods, fake runner)."""

    def _write(text: str | None = None, *, seeds: str = "[0, 1]", name: str = "spec.toml") -> Path:
        body = SPEC.format(runner=FAKE_RUNNER, seeds=seeds) if text is None else textwrap.dedent(text)
        path = tmp_path / name
        path.write_text(body, encoding="utf-8")
        return path

    return _write
