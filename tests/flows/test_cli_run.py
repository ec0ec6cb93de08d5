"""``recloop run``: the main job replays windows through the real flow and prints the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recloop.cli import app
from recloop.data import write_dataset
from recloop.demo import simulate

pytestmark = pytest.mark.flows


def test_run_replays_windows_and_prints_the_cycle_table(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    data = write_dataset(simulate(seed=5, n_users=120, n_items=150), tmp_path / "data")
    home = tmp_path / "home"
    args = ["run", "--data", str(data), "--windows", "2", "--home", str(home)]
    result = CliRunner().invoke(app, [*args, "--config", str(tiny_config)])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("window"))
    # The table follows its header and rule; log lines (stderr, mixed in by the runner) may follow.
    rows = [line.split() for line in lines[header + 2 :] if re.match(r"^\s+\d+\s", line)]
    assert [row[0] for row in rows] == ["1", "2"], result.output
    assert [row[2] for row in rows] == ["1", "2"]  # one registered candidate version per window
    first, second = rows
    # Window 1 is gated against popularity (no champion yet) and must beat it; from window 2 on
    # the candidate is compared with that champion on the same events.
    assert first[-1] == "promoted"
    assert first[5] == "-" and second[5] != "-"
    assert all(float(row[3]) >= 0 and float(row[7]) >= 0 for row in rows)

    # Running the same replay again applies nothing twice.
    again = CliRunner().invoke(app, [*args, "--config", str(tiny_config)])
    assert again.exit_code == 0, again.output
    assert "up-to-date" in again.output
