import subprocess
import sys

import pytest

import unlearnkit


def test_import_is_light():
    """`import unlearnkit` must not pull torch (or sklearn): that is what keeps it under a second."""
    code = "import sys, unlearnkit; print(int('torch' in sys.modules), int('sklearn' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "0"]


def test_lazy_public_names():
    assert "small_cnn" in unlearnkit.list_models()
    assert "fashion_mnist" in unlearnkit.list_datasets()
    assert callable(unlearnkit.create_model)
    with pytest.raises(AttributeError):
        unlearnkit.does_not_exist  # noqa: B018


def test_registry_did_you_mean():
    from unlearnkit.errors import UnknownNameError
    from unlearnkit.models import MODELS

    with pytest.raises(UnknownNameError, match="did you mean 'small_cnn'"):
        MODELS.get("small_cn")
