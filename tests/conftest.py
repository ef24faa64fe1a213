"""Shared fixtures: where the real test images live."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path | None:
    """The shared image folder: $IMGDEDUP_TEST_DATA, else ../shared/data beside the repo, else /work/shared/data."""
    candidates = [os.environ.get("IMGDEDUP_TEST_DATA"), REPO.parent / "shared" / "data", "/work/shared/data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "vectors").is_dir():
            return Path(candidate)
    return None


SHARED_DATA = _shared_data_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA is None:
        pytest.skip("shared test images not found (set IMGDEDUP_TEST_DATA)")
    return SHARED_DATA
