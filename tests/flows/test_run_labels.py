"""Flow runs say what they are: names and tags read back through the Prefect API.

On an empty home each flow ends at once, so these runs cost seconds; the names of runs that
trained (``incremental · batch <id> · v<n> promoted``) are checked by ``test_cli_run``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recloop.paths import get_home

pytestmark = pytest.mark.flows


def _read_back(state: Any) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(state.state_details.flow_run_id)


def test_each_flow_names_and_tags_its_run(prefect_server: None, tmp_path: Path) -> None:
    from flows.feedback_loop import feedback_loop
    from flows.full_retrain import full_retrain
    from flows.pretrain_encoder import pretrain_encoder

    home = get_home(tmp_path / "shop").ensure()
    expected = {
        feedback_loop: (
            "incremental · no new batch · up to date",
            ["recloop", "home:shop", "training:incremental"],
        ),
        full_retrain: (
            "full-retrain · nothing archived",
            ["recloop", "home:shop", "training:full-retrain"],
        ),
        pretrain_encoder: (
            "pretrain · no catalogue",
            ["recloop", "home:shop", "training:pretrain"],
        ),
    }
    for flow, (name, tags) in expected.items():
        state = flow(home=str(home.root), return_state=True)
        assert state.is_completed(), state
        run = _read_back(state)
        assert (run.name, sorted(run.tags)) == (name, sorted(tags)), flow.name


def test_a_run_for_one_batch_is_named_after_it_from_the_start(
    prefect_server: None, tmp_path: Path
) -> None:
    """Named by its parameters before it does anything, so even a run that fails says what it was
    for (here: a batch this home never archived)."""
    from flows.feedback_loop import feedback_loop

    home = get_home(tmp_path / "shop").ensure()
    state = feedback_loop(home=str(home.root), batch_id="ac1eb9e2b1ac1639", return_state=True)
    assert state.is_failed()
    run = _read_back(state)
    assert run.name == "incremental · batch ac1eb9e2"
    assert sorted(run.tags) == ["home:shop", "recloop", "training:incremental"]
