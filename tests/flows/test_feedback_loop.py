"""The real ``feedback-loop`` flow on a tiny config under a real local Prefect server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from recloop.data import write_dataset
from recloop.demo import simulate
from recloop.paths import get_home
from recloop.replay import stage_windows

pytestmark = pytest.mark.flows


def _flow_run_states(name: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[name])))
    return [run.state.type.value for run in runs if run.state is not None]


def _cycle_artifacts() -> list[str]:
    """The Markdown of every ``recloop-cycle`` artifact, oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["recloop-cycle"])),
            sort=ArtifactSort.CREATED_DESC,
        )
    return [str(a.data) for a in reversed(found)]


def _registry(home: Path):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    return MlflowClient()


def _assert_candidate_run(client, version, summary: dict, name: str) -> None:
    """What the MLflow UI shows of a cycle's candidate (real SQLite store, no mocks)."""
    run = client.get_run(version.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert run.info.run_name == name and run.info.status == "FINISHED"
    # The run lasts at least as long as the fine-tune it holds (it was open around it).
    metrics = run.data.metrics
    assert (run.info.end_time - run.info.start_time) / 1000 >= metrics["train_seconds"] > 0
    for key in ("ndcg_at_10", "recall_at_10", "popularity_ndcg_at_10", "train_seconds"):
        assert key in metrics
    assert ("champion_ndcg_at_10" in metrics) == ("champion" in summary["metrics"]["rows"])
    curve = client.get_metric_history(run.info.run_id, "val_ndcg_at_10")
    assert len(curve) > 1 and len({m.step for m in curve}) == len(curve)
    assert client.get_metric_history(run.info.run_id, "train_loss")
    note = run.data.tags["mlflow.note.content"]
    assert summary["reason"] in note and ("Gate passed" in note) == summary["promoted"]
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "interactions"
    assert dataset.dataset.digest == version.tags["data_fingerprint"]
    assert [t.value for t in dataset.tags if t.key == "mlflow.data.context"] == ["training"]
    report_md = client.download_artifacts(run.info.run_id, "report.md")
    text = Path(report_md).read_text(encoding="utf-8")
    assert "Decision:" in text and summary["reason"] in text
    assert f"candidate version {version.version}" in text


def test_feedback_loop_lands_trains_evaluates_and_promotes(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    from flows.feedback_loop import feedback_loop

    data_dir = write_dataset(simulate(seed=3, n_users=150, n_items=200), tmp_path / "demo")
    home = get_home(tmp_path / "home")
    staged = stage_windows(data_dir, 2, home.root, tiny_config)

    first = feedback_loop(
        batch_files=[str(staged[0][0])],
        items_files=[str(staged[0][1])],
        home=str(home.root),
        config_path=str(tiny_config),
    )
    assert first["landed"][0]["status"] == "archived"
    assert first["status"] in {"promoted", "kept-champion"}
    assert first["version"] == "1"
    rows = first["metrics"]["rows"]
    assert {"candidate", "popularity", "transitions"} <= set(rows)
    assert "champion" not in rows  # nothing to compare against before the first version

    client = _registry(home.root)
    v1 = client.get_model_version("recloop", "1")
    assert v1.tags["gate"] in {"passed", "failed"}
    assert v1.tags["reason"] == first["reason"]
    assert str(client.get_model_version_by_alias("recloop", "challenger").version) == "1"
    # No champion yet: trained from scratch, in a run opened before training.
    batch = first["landed"][0]["batch_id"][:8]
    _assert_candidate_run(client, v1, first, f"v1 from-scratch batch {batch}")

    second = feedback_loop(
        batch_files=[str(staged[1][0])],
        items_files=[str(staged[1][1])],
        home=str(home.root),
        config_path=str(tiny_config),
    )
    assert second["version"] == "2"
    v2 = client.get_model_version("recloop", "2")
    assert v2.tags["batch_ids"] == second["landed"][0]["batch_id"]
    kind = "incremental" if v2.tags["warm_start"] == "true" else "from-scratch"
    _assert_candidate_run(client, v2, second, f"v2 {kind} batch {v2.tags['batch_ids'][:8]}")
    # Visible in the UIs: the flow run's Markdown artifact and the run's report and plot.
    published = _cycle_artifacts()[-1]
    assert "candidate version 2" in published and second["reason"] in published
    assert "| candidate |" in published and "| popularity |" in published
    experiment = second["mlflow"]["experiment_id"]
    assert f"#/experiments/{experiment}/runs/{v2.run_id}" in published
    assert ("| champion |" in published) == ("champion" in second["metrics"]["rows"])
    run_files = {a.path for a in client.list_artifacts(v2.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/ndcg_at_10_by_version.png"} <= run_files
    # After evaluation the version learned the held-out events it was judged on: its counts are
    # those of every event of its batches, and it says how it learned them.
    from recloop import registry
    from recloop.config import load_config
    from recloop.landing import read_archive

    archived = read_archive(home).interactions
    assert second["data"]["train_interactions"] < len(archived)
    loaded = registry.configure(home, load_config(tiny_config)).load_version("2")
    assert loaded.popularity.sum() == len(archived)
    how = v2.tags["learned_judged"]  # an update is trained again; from scratch, counts only
    assert how == "counts" or (how == "retrained" and v2.tags["warm_start"] == "true")
    if first["promoted"]:
        # Warm start from the registered champion, judged against it on the same events.
        assert v2.tags["parent_version"] == "1"
        assert v2.tags["warm_start"] == "true"
        assert "champion" in second["metrics"]["rows"]
        champion = str(client.get_model_version_by_alias("recloop", "champion").version)
        assert champion == ("2" if second["promoted"] else "1")

    # The same batch landed again is recognised and not applied twice.
    again = feedback_loop(
        batch_files=[str(staged[1][0])],
        items_files=[str(staged[1][1])],
        home=str(home.root),
        config_path=str(tiny_config),
    )
    assert again["landed"][0]["status"] == "duplicate"
    if second["promoted"] or second["status"] == "baseline-promoted":
        assert again["status"] == "up-to-date"
        serving_versions = 2 if second["promoted"] else 3  # a winning baseline is a version
        assert len(client.search_model_versions("name='recloop'")) == serving_versions
    else:
        # A batch whose candidate failed the gate stays pending, but the same champion would
        # judge the same batch the same way: the run says so and trains nothing (the next batch
        # reopens it).
        assert again["status"] == "up-to-date" and again["batches"] == second["batches"]
        assert f"judged against this champion by version {second['version']}" in again["reason"]
        assert len(client.search_model_versions("name='recloop'")) == 2

    assert _flow_run_states("feedback-loop").count("COMPLETED") >= 3


def test_bad_batch_is_quarantined_and_nothing_else_changes(
    prefect_server: None, tiny_config: Path, tmp_path: Path
) -> None:
    from flows.feedback_loop import feedback_loop

    home = get_home(tmp_path / "home").ensure()
    bad = tmp_path / "bad.csv"
    pd.DataFrame(
        {"user_id": ["u1", None], "item_id": ["i1", "i2"], "timestamp": [1_700_000_000] * 2}
    ).to_csv(bad, index=False)
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": ["i1", "i2"], "title": ["a", "b"], "text": ["", ""]}).to_csv(
        items, index=False
    )
    out = feedback_loop(
        batch_files=[str(bad)],
        items_files=[str(items)],
        home=str(home.root),
        config_path=str(tiny_config),
    )
    landed = out["landed"][0]
    assert landed["status"] == "quarantined"
    assert "user_id" in landed["message"] and "bad.csv" in landed["message"]
    assert out["status"] == "up-to-date"
    assert list(home.archive.iterdir()) == []
    quarantined = home.quarantine / landed["batch_id"]
    assert (quarantined / "received" / "bad.csv").read_bytes() == bad.read_bytes()
    assert (quarantined / "report.md").exists()
