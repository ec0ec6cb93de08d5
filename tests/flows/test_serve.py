"""``recloop serve`` against a real ``prefect server start``: batches announced by ``recloop
ingest`` and by the landing-folder watcher start the triggered ``feedback-loop``; several at once
are decided one after another.

One Prefect server and one ``recloop serve --watch`` (subprocesses bound to 127.0.0.1, stopped by
the module fixture) serve the three tests, on one recloop home: starting them takes most of a
minute on 2 cores. Each test takes the next unlanded time windows of one demo dataset, so any
subset of the tests runs in any order.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from recloop.data import write_dataset
from recloop.demo import simulate
from recloop.landing import archived_batches, batch_id_of
from recloop.paths import get_home
from recloop.replay import stage_windows

pytestmark = pytest.mark.flows

WINDOWS = 5  # a base window and four small ones; the tests take them in time order
STARTUP_SECONDS = 180  # server and serve, on a busy 2-core machine
RUN_SECONDS = 300  # one triggered run: subprocess start, then a tiny-config cycle (~40 s alone)
# Never due while a test runs, so only the triggers start runs.
NEVER = "0 0 1 1 *"
ORCHESTRATION = {"feedback_cron": NEVER, "pretrain_cron": NEVER}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _recloop() -> list[str]:
    script = Path(sys.executable).with_name("recloop")
    return [str(script)] if script.exists() else [sys.executable, "-m", "recloop.cli"]


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT (Ctrl-C) first, then kill the whole process group (flow runs, server workers)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def _tail(path: Path, lines: int = 60) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


@dataclass
class Stack:
    """The running server and ``recloop serve``, their environment, and the staged windows."""

    root: Path
    home: Path
    config: Path
    env: dict[str, str]
    api_url: str
    windows: list[tuple[Path, Path]]
    catalogue: Path
    serve_log: Path
    taken: int = 0

    def take(self, count: int) -> list[tuple[Path, Path]]:
        """The next ``count`` windows not landed yet (interactions, items), in time order."""
        chosen = self.windows[self.taken : self.taken + count]
        assert len(chosen) == count, "the module's dataset has too few windows for these tests"
        self.taken += count
        return chosen

    def recloop(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_recloop(), *args, "--home", str(self.home), "--config", str(self.config)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    @contextmanager
    def client(self) -> Iterator[Any]:
        from prefect.client.orchestration import get_client
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with (
            temporary_settings({PREFECT_API_URL: self.api_url}),
            get_client(sync_client=True) as client,
        ):
            yield client

    def registry(self) -> Any:
        from mlflow import MlflowClient

        uri = f"sqlite:///{self.home / 'mlflow.db'}"
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def versions(self, learned: bool = True) -> dict[int, dict[str, str]]:
        """The tags of every registered learned candidate (with ``learned=False``, of every
        version, the baselines the gate served too), by version number."""
        if not (self.home / "mlflow.db").exists():
            return {}
        client = self.registry()
        found = client.search_model_versions("name='recloop'")
        return {
            int(mv.version): dict(mv.tags)
            for mv in found
            if not learned or mv.tags.get("model_kind") == "learned"
        }

    def wait_for_runs(self, batch_ids: list[str], timeout: float = RUN_SECONDS) -> list[Any]:
        """The completed feedback-loop runs started for ``batch_ids`` (one each), or fail."""
        from prefect.client.schemas.filters import FlowFilter, FlowFilterName

        deadline = time.monotonic() + timeout
        while True:
            with self.client() as client:
                runs = client.read_flow_runs(
                    flow_filter=FlowFilter(name=FlowFilterName(any_=["feedback-loop"]))
                )
            mine = [r for r in runs if r.parameters.get("batch_id") in batch_ids]
            broken = [r for r in mine if r.state and r.state.type.value in {"FAILED", "CRASHED"}]
            if broken:
                pytest.fail(f"{broken[0].name}: {broken[0].state.message}\n{_tail(self.serve_log)}")
            done = [r for r in mine if r.state and r.state.type.value == "COMPLETED"]
            if sorted(r.parameters["batch_id"] for r in done) == sorted(batch_ids):
                return done
            if time.monotonic() > deadline:
                states = [(r.parameters.get("batch_id"), r.state_name) for r in mine]
                pytest.fail(
                    f"no completed run for every batch in {timeout:.0f} s: {states}\n"
                    f"{_tail(self.serve_log)}"
                )
            time.sleep(2)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, tiny_settings: dict[str, Any]
) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("serve")
    home = get_home(root / "home").ensure()
    config = root / "serve.yaml"
    settings = {**tiny_settings, "orchestration": ORCHESTRATION}
    # The base encoder as shipped: MLM pretraining has its own tests, and skipping it here saves
    # ~20 s of the first cycle.
    settings["encoder"] = {**settings["encoder"], "enabled": False}
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(root / "prefect"),  # a fresh server database and client profile
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # the runner looks for new runs every ~1-2 s, not 10
        "HF_HUB_OFFLINE": "1",
        "RECLOOP_HOME": str(home.root),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home.mlflow_db}",
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)

    data = write_dataset(simulate(seed=3, n_users=100, n_items=120, events_per_user=30), root / "d")
    windows = stage_windows(data, WINDOWS, root / "staging", config)

    server_log, serve_log = root / "server.log", root / "serve.log"
    processes: list[tuple[subprocess.Popen[bytes], float]] = []
    try:
        with open(server_log, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start"]
                + ["--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.append((server, 20))
        stack = Stack(
            root, home.root, config, env, api_url, windows, data / "items.parquet", serve_log
        )
        _wait_until(lambda: _healthy(stack), STARTUP_SECONDS, "prefect server", server_log)
        with open(serve_log, "wb") as log:
            serve = subprocess.Popen(
                [
                    *_recloop(),
                    "serve",
                    "--watch",
                    "--home",
                    str(home.root),
                    "--config",
                    str(config),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        processes.insert(0, (serve, 30))  # stopped first: it pauses its schedules on the server
        _wait_until(lambda: _served(stack), STARTUP_SECONDS, "recloop serve", serve_log)
        yield stack
    finally:
        for process, grace in processes:
            _stop(process, grace)


def _wait_until(ready: Any, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not ready in {timeout:.0f} s:\n{_tail(log)}")
        time.sleep(1)


def _healthy(stack: Stack) -> bool:
    import httpx

    try:
        return httpx.get(f"{stack.api_url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _served(stack: Stack) -> bool:
    with stack.client() as client:
        names = {d.name for d in client.read_deployments()}
        automations = client.read_automations()
    return {"scheduled", "on-batch-landed", "on-demand"} <= names and any(
        a.name.startswith("on-batch-landed") for a in automations
    )


def _check_version(tags: dict[str, str], batch_id: str) -> None:
    """A candidate registered for ``batch_id``, tagged with the gate's decision."""
    assert tags["gate"] in {"passed", "failed"}
    assert tags["reason"]
    assert tags["batch_ids"].split(",")[-1] == batch_id  # the batch it was the first judged on


def test_ingest_announces_the_batch_and_the_served_loop_learns_it(stack: Stack) -> None:
    [(interactions, items)] = stack.take(1)
    batch_id = batch_id_of(interactions, items)
    before = stack.versions()

    landed = stack.recloop("ingest", str(interactions), "--items", str(items))
    assert landed.returncode == 0, landed.stderr
    assert f"batch {batch_id} archived" in landed.stdout
    assert f"announced recloop.batch.landed for batch {batch_id}" in landed.stdout

    [run] = stack.wait_for_runs([batch_id])
    with stack.client() as client:
        assert client.read_deployment(run.deployment_id).name == "on-batch-landed"
    new = {v: tags for v, tags in stack.versions().items() if v not in before}
    assert len(new) == 1, new
    [(version, tags)] = new.items()
    _check_version(tags, batch_id)
    champion = stack.registry().get_model_version_by_alias("recloop", "champion").version
    assert (str(version) == str(champion)) == (tags["gate"] == "passed")
    # The run says which home, batch, training and version it was, in the UI's list.
    outcome = "promoted" if tags["gate"] == "passed" else "not promoted"
    assert run.name == f"incremental · batch {batch_id[:8]} · v{version} {outcome}"
    assert {"recloop", f"home:{stack.home.name}", "training:incremental"} <= set(run.tags)
    assert {f"batch:{batch_id[:8]}", f"version:{version}"} <= set(run.tags)


def test_a_batch_dropped_into_the_landing_folder_is_landed_and_learned(stack: Stack) -> None:
    [(interactions, items)] = stack.take(1)
    batch_id = batch_id_of(interactions, items)
    before = stack.versions()
    landing = stack.home / "landing"

    # The naming convention: NAME.parquet with NAME.items.parquet beside it, items first; the
    # batch file is written under a hidden name and renamed into place, as a careful writer does.
    (landing / "orders.items.parquet").write_bytes(items.read_bytes())
    (landing / ".orders.parquet").write_bytes(interactions.read_bytes())
    os.rename(landing / ".orders.parquet", landing / "orders.parquet")

    [run] = stack.wait_for_runs([batch_id])
    assert batch_id in [b.batch_id for b in archived_batches(get_home(stack.home))]
    archived = stack.home / "archive" / batch_id / "received"
    assert (archived / "orders.parquet").read_bytes() == interactions.read_bytes()
    assert (archived / "orders.items.parquet").read_bytes() == items.read_bytes()
    left = [p.name for p in landing.rglob("*") if p.is_file()]
    assert left == [], left  # removed from the landing folder once archived
    new = {v: tags for v, tags in stack.versions().items() if v not in before}
    assert len(new) == 1, new
    _check_version(next(iter(new.values())), batch_id)


def test_three_batches_at_once_make_three_candidates_decided_one_after_another(
    stack: Stack,
) -> None:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
    )

    windows = stack.take(3)
    # Every batch carries the whole catalogue, so that they validate in whatever order the
    # concurrent ingests happen to land them.
    files = []
    for index, (interactions, _) in enumerate(windows):
        items = stack.root / f"catalogue-{index}.parquet"
        pd.read_parquet(stack.catalogue).to_parquet(items, index=False)
        files.append((interactions, items))
    before = stack.versions()
    ingests = [
        subprocess.Popen(
            [*_recloop(), "ingest", str(i), "--items", str(m), "--home", str(stack.home)],
            env=stack.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, m in files
    ]
    outputs = [process.communicate(timeout=300) for process in ingests]
    assert all(p.returncode == 0 for p in ingests), outputs
    assert all("announced recloop.batch.landed" in out for out, _ in outputs), outputs
    ids = {batch_id_of(i, m) for i, m in files}
    order = [b.batch_id for b in archived_batches(get_home(stack.home)) if b.batch_id in ids]
    assert sorted(order) == sorted(ids)

    runs = stack.wait_for_runs(order, timeout=3 * RUN_SECONDS)
    assert len(runs) == 3

    # Exactly three candidates, one per batch, judged in landing order, each against the champion
    # the previous decision left: decided one after another.
    new = {v: tags for v, tags in stack.versions().items() if v not in before}
    assert len(new) == 3, new
    versions = sorted(new)
    assert [new[v]["batch_ids"].split(",")[-1] for v in versions] == order
    # When a baseline beat a candidate, the gate registered it (same batches) and it served.
    served = {
        tags["batch_ids"]: str(v)
        for v, tags in stack.versions(learned=False).items()
        if tags.get("model_kind", "").startswith("baseline:")
    }
    for earlier, later in zip(versions, versions[1:], strict=False):
        tags = new[earlier]
        expected = (
            str(earlier)
            if tags["gate"] == "passed"
            else served.get(tags["batch_ids"], tags["parent_version"])
        )
        assert new[later]["parent_version"] == expected
    for version in versions:
        _check_version(new[version], new[version]["batch_ids"].split(",")[-1])
        # Prefect's runner starts each flow run in a process of its own: the run loaded its
        # parent, the registered champion, from the registry and warm-started from it.
        parent = new[version]["parent_version"]
        assert new[version]["warm_start"] == ("true" if parent else "false"), new[version]

    # No fine-tune or promotion overlaps another: across the three flow runs, the task runs
    # alternate fine_tune, promote, fine_tune, ... each starting after the previous one ended.
    with stack.client() as client:
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs]))
        )
    steps = sorted(
        (t for t in tasks if t.name.split("-")[0] in {"fine_tune", "promote"}),
        key=lambda t: t.start_time,
    )
    assert [t.name.split("-")[0] for t in steps] == ["fine_tune", "promote"] * 3
    for previous, following in zip(steps, steps[1:], strict=False):
        assert previous.end_time <= following.start_time, (previous.name, following.name)
