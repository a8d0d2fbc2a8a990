"""Shared fixtures: paths to the real benchmark data, skipped with a reason where absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ../shared/data beside the checkout, or wherever SIDREC_SHARED_DATA points
SHARED_DATA = Path(
    os.environ.get("SIDREC_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def shared_data(name: str) -> Path:
    """The folder ``../shared/data/<name>``, or skip the test when this machine lacks it."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real benchmark data {path} is not on this machine")
    return path


@pytest.fixture(scope="session")
def minionerec_src() -> Path:
    return shared_data("minionerec_amazon18")


@pytest.fixture(scope="session")
def letter_src() -> Path:
    return shared_data("letter_amazon14")


@pytest.fixture(scope="session")
def beauty_titles() -> Path:
    return shared_data("letter_beauty_titles")
