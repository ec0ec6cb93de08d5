"""A Prefect retry of the promotion after a partial failure registers the candidate once.

The cycle opens the candidate's MLflow run before training and hands its id to the promote task
(``tasks.promote.promote_task``); this checks, under a real Prefect server and a real SQLite
store, that a retried task finds the version its run registered: one run, one version.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.flows


def test_a_retried_promote_task_registers_one_version(
    prefect_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from prefect.runtime import task_run
    from registry_helpers import report, tiny_recommender

    from recloop import registry
    from recloop.config import Config
    from recloop.paths import get_home
    from tasks.promote import promote_candidate

    home = get_home(tmp_path / "home")
    # Set through monkeypatch so that it is unset again after the test (configure() exports it).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home.mlflow_db}")
    config = Config()
    tries: list[int] = []

    # The same call as promote_task, then a failure on the first try: the version is registered
    # and promoted, but the task run fails and Prefect retries it.
    @task(retries=1, retry_delay_seconds=0, cache_policy=NO_CACHE)
    def promote_then_fail_once(run_id: str) -> str:
        tries.append(task_run.run_count)
        result = promote_candidate(
            tiny_recommender(0), report(0.05, None, 0.02), config, home,
            tags={"batch_ids": "b1"}, run_id=run_id,
        )  # fmt: skip
        if task_run.run_count == 1:
            raise ConnectionError("registry went away after registering")
        return result.version

    @flow
    def cycle() -> tuple[str, str]:
        reg = registry.configure(home, config)
        with reg.candidate_run("from-scratch", ["b1"]) as run:
            return promote_then_fail_once(run.run_id), run.run_id

    version, run_id = cycle()
    assert tries == [1, 2]
    reg = registry.configure(home, config)
    assert [v["version"] for v in reg.list_versions()] == [version] == ["1"]
    assert reg.champion_version() == "1"
    (only,) = reg.client.search_runs([reg.experiment_id])
    assert only.info.run_id == run_id and only.info.status == "FINISHED"
    assert only.info.run_name == "v1 from-scratch batch b1"
