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


@pytest.mark.parametrize(
    "command",
    [["run", "--data"], ["retrain", "--data"], ["evaluate", "--data"]],
    ids=["run", "retrain", "evaluate"],
)
def test_a_missing_data_directory_is_named_as_missing(command: list[str], tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = runner.invoke(app, [*command, str(missing), "--home", str(tmp_path / "home")])
    assert result.exit_code == 1
    assert result.output.strip() == f"recloop: {missing}: the dataset directory does not exist"


def test_recommend_on_an_empty_home_says_there_is_no_champion_yet(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = runner.invoke(app, ["recommend", "u1", "--home", str(home)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert line.startswith(f"recloop: no champion yet in {home}")
    assert "recloop run" in line and "recloop update" in line
    assert not (home / "mlflow.db").exists()  # asking created no registry


def test_every_command_has_a_clean_help_text() -> None:
    import typer.main

    group = typer.main.get_command(app)
    names = [(name,) for name in group.commands if name != "bench"]
    names += [("bench", name) for name in group.commands["bench"].commands]
    for name in names:
        result = runner.invoke(app, [*name, "--help"])
        assert result.exit_code == 0, name
        text = result.output
        assert "Usage: " in text and "--help" in text, name
        summary = text.split("Usage: ", 1)[1].splitlines()[2:4]
        assert any(line.strip() for line in summary), f"{name}: no description"
        assert "\\b" not in text and "``" not in text and ":func:" not in text, name
    verbose = runner.invoke(app, ["--help"]).output
    assert "--verbose" in verbose and "Debug logging" not in verbose


def test_ingest_missing_file_fails_cleanly(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    result = runner.invoke(app, ["ingest", str(missing), "--home", str(tmp_path / "home")])
    assert result.exit_code == 1
    assert "nope.csv" in result.output


def test_ingest_bad_batch_is_quarantined_in_one_line_naming_the_report(tmp_path: Path) -> None:
    batch = tmp_path / "batch.csv"
    pd.DataFrame({"user_id": ["u1"], "timestamp": [1_700_000_000]}).to_csv(batch, index=False)
    home = tmp_path / "home"
    result = runner.invoke(app, ["ingest", str(batch), "--home", str(home)])
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()  # said once, nothing else printed
    assert line.startswith("recloop: batch ") and "quarantined" in line
    assert "batch.csv" in line and "item_id" in line
    assert not any((home / "archive").iterdir())
    [folder] = (home / "quarantine").iterdir()
    report = folder / "report.md"
    assert line.endswith(f"report: {report}") and report.is_file()
    # The same bytes landed again are not accepted either: exit 1, naming the report.
    again = runner.invoke(app, ["ingest", str(batch), "--home", str(home)])
    assert again.exit_code == 1
    [line] = again.output.strip().splitlines()
    assert line.startswith("recloop: batch ") and "already quarantined" in line
    assert f"report: {report}" in line
    assert [p.name for p in (home / "quarantine").iterdir()] == [folder.name]


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
    row["champion"], row["serving"] = "2", "learned"
    lost = {
        **row,
        "window": 3,
        "status": "baseline-promoted",
        "promoted": False,
        "version": "3",
        "champion": "4",
        "serving": "recent_popularity",
    }
    lost["metrics"] = {"rows": {**row["metrics"]["rows"], "recent_popularity": {"ndcg_at_10": 0.4}}}
    table = format_cycle_table([row, lost])
    promoted, baseline = table.splitlines()[-2:]
    for text in ("0.3000", "0.2000", "0.0500", "0.2500", "promoted", "v2 learned"):
        assert text in promoted
    assert baseline.endswith("baseline wins  v4 recent popularity") and "0.4000" in baseline


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


def test_the_run_ends_with_three_next_steps(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from recloop.cli import _next_steps

    batch = tmp_path / "interactions.parquet"
    frame = {"user_id": ["u1", "u2", "u2"], "item_id": ["a", "b", "c"], "timestamp": [1, 2, 3]}
    pd.DataFrame(frame).to_parquet(batch)
    home = tmp_path / "home"
    mlflow_info = {"tracking_uri": "sqlite:////x.db", "experiment_id": "7"}
    rows = [{"landed": [{"status": "archived"}], "mlflow": mlflow_info}]
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        lines = _next_steps(rows, [(batch, batch)], home)
    assert len(lines) == 3
    commands = [line[5:].split("  #")[0].strip() for line in lines]
    assert commands == [
        f"recloop recommend u2 --home {home}",  # the most active user of the last batch
        "mlflow ui --backend-store-uri sqlite:////x.db",
        "prefect server start",
    ]
    assert lines[0].startswith("next: ") and "http://127.0.0.1:4200/runs" in lines[2]
    # the experiment's runs in the "Model training" view, not MLflow 3's GenAI default
    assert "/#/experiments/7/runs?workflowType=machine_learning" in lines[1]
