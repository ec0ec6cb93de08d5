"""A real (temporary, local) Prefect server for the whole flows session, and a tiny config."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

TINY_CONFIG = {
    "encoder": {
        "max_steps": 2,
        "head_warmup_steps": 0,
        "batch_size": 8,
        "max_length": 32,
    },
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_seq_len": 20},
    "train": {"epochs": 4, "finetune_epochs": 2, "patience": 2},
}


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """Prefect's own test harness: a real API server on SQLite, started once per session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def tiny_settings() -> dict[str, Any]:
    """A copy of :data:`TINY_CONFIG`, for fixtures that write their own config file."""
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_CONFIG), encoding="utf-8")
    return path
