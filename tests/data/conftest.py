"""Fixtures for the data tests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recloop.paths import Home, get_home


@pytest.fixture
def home(tmp_path: Path) -> Home:
    """An empty RECLOOP_HOME inside the test's temporary folder."""
    return get_home(tmp_path / "home")


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write a frame as CSV under tmp_path/incoming and return the path."""

    def write(frame: pd.DataFrame, name: str) -> Path:
        folder = tmp_path / "incoming"
        folder.mkdir(exist_ok=True)
        path = folder / name
        frame.to_csv(path, index=False)
        return path

    return write
