"""``python -m unlearnkit.cli``: the same entry point as the ``unlearnkit`` command."""

import sys

from . import main

sys.exit(main())
