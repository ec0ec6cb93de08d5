"""The command line as a user meets it: help, one-line errors, non-zero exits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recloop.cli import app, format_cycle_table

pytestmark = pytest.mark.unit

runner = CliRunner()


def test_help_lists_the_contract_commands() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "import", "ingest", "update", "recommend"):
        assert command in result.output


def test_import_unknown_format_is_one_line_and_non_zero(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", "netflix", str(tmp_path), str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("recloop: ")
    assert len(result.output.strip().splitlines()) == 1


def test_ingest_missing_file_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = runner.invoke(app, ["ingest", str(missing), "--home", str(tmp_path / "home")])
    assert result.exit_code == 1
    assert "nope.csv" in result.output


def test_ingest_bad_batch_is_quarantined_with_non_zero_exit(tmp_path: Path) -> None:
    batch = tmp_path / "batch.csv"
    pd.DataFrame({"user_id": ["u1"], "timestamp": [1_700_000_000]}).to_csv(batch, index=False)
    home = tmp_path / "home"
    result = runner.invoke(app, ["ingest", str(batch), "--home", str(home)])
    assert result.exit_code == 1
    line = result.output.strip().splitlines()[-1]
    assert "batch.csv" in line and "item_id" in line
    assert not any((home / "archive").iterdir())
    assert len(list((home / "quarantine").iterdir())) == 1


def test_ingest_good_batch_is_archived(tmp_path: Path) -> None:
    batch, items = tmp_path / "batch.csv", tmp_path / "items.csv"
    pd.DataFrame(
        {"user_id": ["u1", "u2"], "item_id": ["i1", "i2"], "timestamp": [1_700_000_000] * 2}
    ).to_csv(batch, index=False)
    pd.DataFrame({"item_id": ["i1", "i2"], "title": ["A", "B"], "text": ["", ""]}).to_csv(
        items, index=False
    )
    home = tmp_path / "home"
    result = runner.invoke(app, ["ingest", str(batch), "--items", str(items), "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert len(list((home / "archive").iterdir())) == 1
    again = runner.invoke(app, ["ingest", str(batch), "--items", str(items), "--home", str(home)])
    assert again.exit_code == 0
    assert "duplicate" in again.output.lower() or "already" in again.output.lower()


def test_cycle_table_shows_candidate_champion_and_popularity() -> None:
    row = {
        "window": 2,
        "status": "promoted",
        "promoted": True,
        "batches": ["abc"],
        "version": "2",
        "data": {"eval_users": 10},
        "metrics": {
            "rows": {
                "candidate": {"ndcg_at_10": 0.3, "recall_at_10": 0.5},
                "champion": {"ndcg_at_10": 0.2, "recall_at_10": 0.4},
                "popularity": {"ndcg_at_10": 0.05, "recall_at_10": 0.1},
                "transitions": {"ndcg_at_10": 0.25, "recall_at_10": 0.45},
            }
        },
    }
    table = format_cycle_table([row])
    last = table.splitlines()[-1]
    for text in ("0.3000", "0.2000", "0.0500", "0.2500", "promoted"):
        assert text in last


def test_ingest_says_in_one_line_when_the_arrival_cannot_be_announced(tmp_path: Path) -> None:
    import socket

    from prefect.settings import PREFECT_API_URL, temporary_settings

    batch, items = tmp_path / "batch.csv", tmp_path / "items.csv"
    pd.DataFrame({"user_id": ["u1"], "item_id": ["i1"], "timestamp": [1_700_000_000]}).to_csv(
        batch, index=False
    )
    pd.DataFrame({"item_id": ["i1"], "title": ["A"], "text": [""]}).to_csv(items, index=False)
    with socket.socket() as probe:  # a port no server listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/api"
    home = tmp_path / "home"
    with temporary_settings({PREFECT_API_URL: url}):
        result = runner.invoke(
            app, ["ingest", str(batch), "--items", str(items), "--home", str(home)]
        )
    assert result.exit_code == 0, result.output  # the batch is archived all the same
    assert len(list((home / "archive").iterdir())) == 1
    warnings = [line for line in result.stderr.splitlines() if "not announced" in line]
    assert len(warnings) == 1 and url.split("/api")[0] in warnings[0]
    assert "pending" in warnings[0]


def test_serve_without_a_prefect_server_fails_in_one_line(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = runner.invoke(app, ["serve", "--home", str(tmp_path / "home")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("recloop: ") and "PREFECT_API_URL" in result.output
    assert len(result.output.strip().splitlines()) == 1
