"""A Prefect retry of the promotion after a partial failure registers the candidate once.

``tasks.promote.promote_task`` keys each promotion attempt by its task run id; this checks, under
a real Prefect server, that a retried task run keeps that id, so the key finds the version the
failed try registered.
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
    keys: list[str] = []

    # The same call and key as promote_task, then a failure on the first try: the version is
    # registered and promoted, but the task run fails and Prefect retries it.
    @task(retries=1, retry_delay_seconds=0, cache_policy=NO_CACHE)
    def promote_then_fail_once() -> str:
        keys.append(str(task_run.id))
        result = promote_candidate(
            tiny_recommender(0), report(0.05, None, 0.02), config, home,
            tags={"batch_ids": "b1"}, candidate_key=task_run.id,
        )  # fmt: skip
        if task_run.run_count == 1:
            raise ConnectionError("registry went away after registering")
        return result.version

    @flow
    def cycle() -> str:
        return promote_then_fail_once()

    version = cycle()
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0] != "None"
    reg = registry.configure(home, config)
    assert [v["version"] for v in reg.list_versions()] == [version] == ["1"]
    assert reg.champion_version() == "1"
