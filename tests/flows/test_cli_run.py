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

    # Running the same replay again lands nothing twice. A window whose candidate passed the gate
    # is up to date; one whose candidate failed it stays pending and is learned again.
    again = CliRunner().invoke(app, [*args, "--config", str(tiny_config)])
    assert again.exit_code == 0, again.output
    if second[-1] == "promoted":
        assert "up-to-date" in again.output
    else:
        again_lines = again.output.strip().splitlines()
        start = next(i for i, line in enumerate(again_lines) if line.lstrip().startswith("window"))
        again_rows = [
            line.split() for line in again_lines[start + 2 :] if re.match(r"^\s+\d+\s", line)
        ]
        assert again_rows[0][1] == second[1]  # window 2's batch, still pending, learned again


def test_ingest_then_update_learns_the_landed_batch(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    data = simulate(seed=9, n_users=100, n_items=120)
    batch, items = tmp_path / "batch.parquet", tmp_path / "items.parquet"
    data.interactions.to_parquet(batch, index=False)
    data.items.to_parquet(items, index=False)
    home = ["--home", str(tmp_path / "home")]
    runner = CliRunner()

    landed = runner.invoke(app, ["ingest", str(batch), "--items", str(items), *home])
    assert landed.exit_code == 0, landed.output
    updated = runner.invoke(app, ["update", *home, "--config", str(tiny_config)])
    assert updated.exit_code == 0, updated.output
    rows = [line.split() for line in updated.output.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == 1 and rows[0][2] == "1"  # version 1 learned the ingested batch
    again = runner.invoke(app, ["update", *home, "--config", str(tiny_config)])
    assert again.exit_code == 0 and "up-to-date" in again.output
