"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data folder from ``SUPERCONV_DATA``; skips the test when it is absent."""
    value = os.environ.get("SUPERCONV_DATA")
    if not value or not Path(value).is_dir():
        pytest.skip("SUPERCONV_DATA not set / data not found")
    return Path(value)
