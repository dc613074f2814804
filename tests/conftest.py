"""Shared test setup: the helper modules next to the tests (``_models``, ``_cli``) are importable."""

from __future__ import annotations

import sys
from pathlib import Path

# --import-mode=importlib does not put the test folder on sys.path; the helpers live there.
sys.path.insert(0, str(Path(__file__).parent))
