"""``recloop run``: the main job replays windows through the real flow and prints the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from cli_helpers import table_rows
from typer.testing import CliRunner

from recloop.cli import app
from recloop.data import write_dataset
from recloop.demo import simulate

pytestmark = pytest.mark.flows


def _check_quiet_console(output: str, home: Path) -> None:
    """A line to start, one per window, the table, three lines of next steps: no library noise."""
    lines = output.strip().splitlines()
    assert lines[0].startswith("replaying ")
    assert lines[0].endswith(f" as 2 arriving batches into {home}")
    assert [line.split(":")[0] for line in lines[1:3]] == ["window 1/2", "window 2/2"]
    for noise in ("INFO", "Created version", "Registered model", "Downloading", "prefect"):
        assert noise not in "\n".join(lines[:3]), output
    # start, two windows, a blank line, the table (header, rule, two rows), a blank, next steps
    assert len(lines) == 1 + 2 + 1 + 4 + 1 + 3, output
    nexts = lines[-3:]
    assert nexts[0].startswith("next: recloop recommend ") and f"--home {home}" in nexts[0]
    assert nexts[1].split()[:3] == ["mlflow", "ui", "--backend-store-uri"]
    assert f"sqlite:///{home}/mlflow.db" in nexts[1]
    # Without PREFECT_API_URL: `prefect server start`; here the test server's own runs page.
    from prefect.settings import get_current_settings

    api = str(get_current_settings().api.url)
    assert nexts[2].split("#")[0].strip() == f"open {api.removesuffix('/api')}/runs"


def _check_flow_runs(rows: list[list[str]], home: Path) -> None:
    """Each window's feedback-loop run, read back through the Prefect API: named after its batch
    and outcome, tagged with the home, the kind of training, the batch and the version."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    for row in rows:
        batch, version, decision = row[1][:8], row[2], row[10]
        with get_client(sync_client=True) as client:
            [run] = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"batch:{batch}"]))
            )
            flow = client.read_flow(run.flow_id)
        outcome = "promoted" if decision == "promoted" else "not promoted"
        assert flow.name == "feedback-loop"
        assert run.name == f"incremental · batch {batch} · v{version} {outcome}"
        assert set(run.tags) == {
            "recloop",
            f"home:{home.name}",
            "training:incremental",
            f"batch:{batch}",
            f"version:{version}",
        }


def _check_recommend(home: Path, config: Path, champion: str) -> None:
    """The version that answered; an unknown user in one clean line, with the way to the
    popularity fallback."""
    import pandas as pd

    runner = CliRunner()
    args = ["--home", str(home), "--config", str(config)]
    interactions = pd.read_parquet(next((home / "archive").glob("*/interactions.parquet")))
    user = str(interactions["user_id"].iloc[0])
    known = runner.invoke(app, ["recommend", user, "--k", "3", *args])
    assert known.exit_code == 0, known.output
    lines = known.output.strip().splitlines()
    assert lines[0].startswith(f"recloop champion version {champion} (learned), top 3 for {user} (")
    assert len(lines) == 4

    unknown = runner.invoke(app, ["recommend", "nobody", *args])
    assert unknown.exit_code == 1
    [line] = unknown.output.strip().splitlines()
    assert line.startswith("recloop: unknown user nobody: no events in ")
    assert "popularity fallback" in line and "recloop recommend nobody --allow-unknown" in line
    assert '"' not in line and "'" not in line

    fallback = runner.invoke(app, ["recommend", "nobody", "--allow-unknown", "--k", "3", *args])
    assert fallback.exit_code == 0, fallback.output
    assert "(unknown user: popularity fallback)" in fallback.output.splitlines()[0]


def test_run_replays_windows_and_prints_the_cycletable_rows(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    data = write_dataset(simulate(seed=5, n_users=120, n_items=150), tmp_path / "data")
    home = tmp_path / "shop-home"
    args = ["run", "--data", str(data), "--windows", "2", "--home", str(home)]
    result = CliRunner().invoke(app, [*args, "--config", str(tiny_config)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert [row[0] for row in rows] == ["1", "2"], result.output
    assert [row[2] for row in rows] == ["1", "2"]  # one registered candidate version per window
    first, second = rows
    # Window 1 is gated against the baselines (no champion yet) and must beat them all; from
    # window 2 on the candidate is compared with that champion on the same events.
    assert first[-2:] == ["promoted", "v1 learned"]
    assert first[5] == "-" and second[5] != "-"
    assert all(float(value) >= 0 for row in rows for value in (row[3], *row[6:9]))
    _check_quiet_console(result.output, home)
    _check_flow_runs(rows, home)
    champion = second[-1].split()[0].removeprefix("v")
    _check_recommend(home, tiny_config, champion)

    # Running the same replay again lands nothing twice. A window whose candidate passed the gate
    # is up to date; one whose candidate failed it stays pending and is learned again.
    again = CliRunner().invoke(app, [*args, "--config", str(tiny_config)])
    assert again.exit_code == 0, again.output
    if second[-2] != "kept champion":
        assert "up-to-date" in again.output
    else:
        assert table_rows(again.output)[0][1] == second[1]  # window 2's batch, learned again


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


def test_the_progress_bar_follows_the_task_runs_of_a_flow(prefect_server: None) -> None:
    """Each task run of an in-process flow reports its task's name as it starts, while the run
    logs keep their level (no DEBUG records sent to the Prefect API)."""
    import logging

    from prefect import flow, task

    from recloop.progress import follow_task_runs

    @task(name="validate")
    def validate() -> int:
        return 1

    @task(name="fine_tune")
    def fine_tune(x: int) -> int:
        logging.getLogger("tasks.fine_tune").info("epoch 1 done")
        return x + 1

    @flow(name="stages")
    def stages() -> int:
        return fine_tune(fine_tune(validate()))

    task_runs = logging.getLogger("prefect.task_runs")
    levels = [task_runs.level] + [handler.level for handler in task_runs.handlers]
    seen: list[str] = []
    with follow_task_runs(seen.append):
        assert stages() == 3
    assert seen == ["validate", "fine_tune", "fine_tune"]  # each run, as it started
    assert [task_runs.level] + [handler.level for handler in task_runs.handlers] == levels
