"""``deployments/prefect.yaml`` deploys with ``prefect deploy --all`` against a real server: the
four deployments with their schedules and the data-arrival trigger, read back through the API."""

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
    assert set(deployments) == {
        "feedback-loop/scheduled",
        "feedback-loop/on-batch-landed",
        "pretrain-encoder/scheduled",
        "full-retrain/on-demand",
    }
    assert all(d.work_pool_name == "recloop" for d in deployments.values())
    crons = {name: [s.schedule.cron for s in d.schedules] for name, d in deployments.items()}
    assert crons == {
        "feedback-loop/scheduled": ["0 3 * * *"],
        "feedback-loop/on-batch-landed": [],
        "pretrain-encoder/scheduled": ["0 2 * * 0"],
        "full-retrain/on-demand": [],
    }
    assert all(s.active for d in deployments.values() for s in d.schedules)
    # Their runs are tagged with the kind of training from the moment they are scheduled.
    assert {name: sorted(d.tags) for name, d in deployments.items()} == {
        "feedback-loop/scheduled": ["recloop", "training:incremental"],
        "feedback-loop/on-batch-landed": ["recloop", "training:incremental"],
        "pretrain-encoder/scheduled": ["recloop", "training:pretrain"],
        "full-retrain/on-demand": ["recloop", "training:full-retrain"],
    }

    # The data-arrival trigger runs the loop with the batch id from the event, and no path: a
    # client of the Prefect API must not be able to point the worker at another folder.
    [automation] = [a for a in automations if a.name.startswith("on-batch-landed")]
    assert automation.trigger.expect == {"recloop.batch.landed"}
    assert automation.trigger.match.root == {"prefect.resource.id": "recloop.batch.*"}
    [action] = automation.actions
    assert action.deployment_id == deployments["feedback-loop/on-batch-landed"].id
    assert action.parameters == {"batch_id": "{{ event.payload.batch_id }}"}
    # Only the triggered deployment reacts to events.
    assert len([a for a in automations if a.name.startswith("on-batch-landed")]) == 1
    assert not [a for a in automations if "scheduled" in a.name or "on-demand" in a.name]
