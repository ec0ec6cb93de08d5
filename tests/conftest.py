"""Shared test settings: offline, quiet, and state kept out of the user's home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATASETS = REPO_ROOT.parent / "shared" / "datasets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture(autouse=True)
def _no_ambient_tracking(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test never writes to a tracking server or home the developer happens to have set."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RECLOOP_HOME", raising=False)


def dataset_path(name: str) -> Path:
    """A real dataset under ../shared/datasets, or skip the test saying where it was expected."""
    path = DATASETS / name
    if not path.exists():
        pytest.skip(f"real dataset not found at {path}")
    return path
