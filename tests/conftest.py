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


@pytest.fixture(autouse=True)
def _restore_threads():
    # train.build() sets torch's thread count for the whole process (--threads): undo it.
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
