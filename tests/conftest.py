"""Shared fixtures.

Test images are committed under ``tests/data/`` (see its README for what each
file is and where it came from), so the suite runs from a clone alone.
"""
from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def test_data() -> Path:
    """The committed test images, ``tests/data/``."""
    return DATA
