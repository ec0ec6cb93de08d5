"""``deployments/prefect.yaml`` deploys with ``prefect deploy --all`` against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.flows

REPO = Path(__file__).resolve().parents[2]


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "prefect", *args]
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_prefect_deploy_all_creates_the_deployments(prefect_server: None) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    # prefect.yaml pins the working directory to {{ $PWD }}: the checkout being deployed.
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "PWD": str(REPO)}
    _prefect("work-pool", "create", "recloop", "--type", "process", "--overwrite", env=env)
    _prefect(
        "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml", env=env
    )

    with get_client(sync_client=True) as client:
        deployments = {
            f"{client.read_flow(d.flow_id).name}/{d.name}": d for d in client.read_deployments()
        }
        automations = client.read_automations()
    assert {
        "feedback-loop/scheduled",
        "feedback-loop/on-batch-landed",
        "full-retrain/on-demand",
    } <= set(deployments)
    scheduled = deployments["feedback-loop/scheduled"]
    assert [s.schedule.cron for s in scheduled.schedules] == ["0 3 * * *"]
    assert all(d.work_pool_name == "recloop" for d in deployments.values())
    triggers = [a.trigger for a in automations if a.name.startswith("on-batch-landed")]
    assert len(triggers) == 1
    assert triggers[0].expect == {"recloop.batch.landed"}
    assert triggers[0].match.root == {"prefect.resource.id": "recloop.batch.*"}
