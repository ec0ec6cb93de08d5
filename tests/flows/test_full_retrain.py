"""The real ``full-retrain`` flow and ``recloop retrain``, tiny config, real Prefect server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import table_rows
from typer.testing import CliRunner

from recloop.cli import app
from recloop.data import write_dataset
from recloop.demo import simulate
from recloop.paths import get_home
from recloop.replay import stage_windows

pytestmark = pytest.mark.flows


def _registry(home: Path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    return MlflowClient()


def test_full_retrain_trains_from_scratch_on_every_batch(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    from flows.feedback_loop import feedback_loop
    from flows.full_retrain import full_retrain
    from recloop import registry
    from recloop.config import load_config

    data_dir = write_dataset(simulate(seed=11, n_users=120, n_items=150), tmp_path / "demo")
    home = get_home(tmp_path / "home")
    staged = stage_windows(data_dir, 2, home.root, tiny_config)
    cycles = [
        feedback_loop(
            batch_files=[str(interactions)],
            items_files=[str(items)],
            home=str(home.root),
            config_path=str(tiny_config),
        )
        for interactions, items in staged
    ]
    batch_ids = [cycle["landed"][0]["batch_id"] for cycle in cycles]
    client = _registry(home.root)
    champion_before = str(client.get_model_version_by_alias("recloop", "champion").version)
    assert champion_before == cycles[-1]["champion"]
    # A cycle registers its candidate, and the baseline it serves instead when one wins.
    new = str(len(client.search_model_versions("name='recloop'")) + 1)

    out = full_retrain(home=str(home.root), config_path=str(tiny_config))

    assert out["version"] == new
    assert out["status"] in {"promoted", "kept-champion"}
    assert out["batches"] == batch_ids
    assert out["champion_before"] == champion_before
    version = client.get_model_version("recloop", new)
    assert version.tags["training"] == "full-retrain"
    assert version.tags["warm_start"] == "false"
    assert version.tags["batch_ids"] == ",".join(batch_ids)
    assert version.tags["parent_version"] == champion_before
    run = client.get_run(version.run_id)
    first, last = batch_ids[0][:8], batch_ids[-1][:8]
    assert run.info.run_name == f"v{new} full-retrain 2 batches {first}..{last}"
    assert out["reason"] in run.data.tags["mlflow.note.content"]
    assert len(client.get_metric_history(version.run_id, "val_ndcg_at_10")) > 1
    recommender = registry.configure(home, load_config(tiny_config)).load_version(new)
    assert recommender.metadata["trained_batches"] == batch_ids
    assert recommender.metadata["warm_start"] is False

    # Judged on the events the loop held out of the newest batch: the same cases, the same
    # training data for the baselines, and the champion scoring exactly as when it was gated.
    last = cycles[-1]
    assert out["data"]["eval_users"] == last["data"]["eval_users"]
    assert out["data"]["train_interactions"] == last["data"]["train_interactions"]
    rows, last_rows = out["metrics"]["rows"], last["metrics"]["rows"]
    assert rows["popularity"] == pytest.approx(last_rows["popularity"])
    assert rows["transitions"] == pytest.approx(last_rows["transitions"])
    served = {"promoted": "candidate", "baseline-promoted": last["serving"]}
    champion_then = last_rows[served.get(last["status"], "champion")]
    assert rows["champion"] == pytest.approx(champion_then)
    assert rows["candidate"]["n_cases"] == rows["champion"]["n_cases"]

    assert str(client.get_model_version_by_alias("recloop", "champion").version) == out["champion"]
    assert out["champion"] == new if out["promoted"] else out["champion"] != new
    assert str(client.get_model_version_by_alias("recloop", "challenger").version) == new


def test_retrain_command_lands_the_data_then_retrains(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    data = write_dataset(simulate(seed=12, n_users=120, n_items=150), tmp_path / "data")
    home = get_home(tmp_path / "home")
    args = ["retrain", "--home", str(home.root), "--config", str(tiny_config)]

    empty = CliRunner().invoke(app, args)
    assert empty.exit_code == 1
    assert "recloop: nothing is archived" in empty.output

    result = CliRunner().invoke(app, [*args, "--data", str(data)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert len(rows) == 1 and rows[0][2] == "1", result.output
    assert rows[0][-2:] == ["promoted", "v1 learned"]  # gated against the baselines
    assert len(list(home.archive.iterdir())) == 1  # the whole folder landed as one batch
    assert _registry(home.root).get_model_version("recloop", "1").tags["training"] == (
        "full-retrain"
    )


def test_retrain_command_refuses_a_quarantined_dataset(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    pd.DataFrame(
        {"user_id": ["u1", None], "item_id": ["i1", "i2"], "timestamp": [1_700_000_000] * 2}
    ).to_csv(bad / "interactions.csv", index=False)
    pd.DataFrame({"item_id": ["i1", "i2"], "title": ["a", "b"], "text": ["", ""]}).to_csv(
        bad / "items.csv", index=False
    )
    home = get_home(tmp_path / "home")
    args = ["retrain", "--home", str(home.root), "--config", str(tiny_config)]

    result = CliRunner().invoke(app, [*args, "--data", str(bad)])
    assert result.exit_code == 1
    failure = [line for line in result.output.splitlines() if line.startswith("recloop: ")]
    assert len(failure) == 1 and "user_id" in failure[0], result.output
    assert list(home.archive.iterdir()) == []
    assert len(list(home.quarantine.iterdir())) == 1

    missing = CliRunner().invoke(app, [*args, "--data", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert missing.output.startswith("recloop: ") and "nowhere" in missing.output
    assert "does not exist" in missing.output  # the folder, not a file in it
