"""Shared fixtures: an isolated model cache, no progress bars, small thread count."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("UNLEARNKIT_PROGRESS", "0")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test session trains into its own cache, so tests never depend on a user's cache."""
    if "UNLEARNKIT_TEST_CACHE" in os.environ:
        os.environ["UNLEARNKIT_CACHE"] = os.environ["UNLEARNKIT_TEST_CACHE"]
    else:
        os.environ["UNLEARNKIT_CACHE"] = str(tmp_path_factory.mktemp("unlearnkit-cache"))
