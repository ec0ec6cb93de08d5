"""The champion's consumers: REST serving with ``mlflow models serve``, a fresh load by alias after
a promotion, and ``recloop rollback`` (real MLflow on SQLite, a real server on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import yaml
from registry_helpers import report, tiny_recommender
from typer.testing import CliRunner

from recloop import registry
from recloop.cli import app
from recloop.config import Config
from recloop.paths import Home
from tasks.promote import promote_candidate

pytestmark = pytest.mark.model

SERVE_TIMEOUT_S = 180  # a 2-core CI machine shared with other jobs: MLflow + torch import slowly


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    """One SQLite store for the module: creating its tables takes ~10 s on 2 cores."""
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield Home(tmp_path_factory.mktemp("consumers") / "home")
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _post(url: str, payload: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow models serve exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    pytest.fail(f"mlflow models serve not up in {SERVE_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and every worker it forked (they share its process group)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def test_champion_serves_over_rest_and_a_fresh_load_follows_the_alias(
    store: Home, tmp_path: Path
) -> None:
    config = Config()
    reg = registry.configure(store, config)
    first = promote_candidate(
        tiny_recommender(0), report(0.05, None, 0.02), config, store, tags={"batch_ids": "b1"}
    )
    assert first.promoted and reg.champion_version() == first.version

    port = _free_port()
    log = tmp_path / "serve.log"
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": reg.uri,
    }
    command = [
        str(Path(bin_dir) / "mlflow"), "models", "serve",
        "-m", "models:/recloop@champion", "--env-manager", "local",
        "-h", "127.0.0.1", "-p", str(port),
    ]  # fmt: skip
    with log.open("wb") as out:
        # Its own session: the test can stop the server and its workers as one process group.
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(proc, f"{base}/ping", log)

        history = ["i1", "i2"]
        records = _post(
            f"{base}/invocations",
            {"dataframe_records": [{"user_id": "u1", "history": history}], "params": {"k": 3}},
        )
        split = _post(
            f"{base}/invocations",
            {
                "dataframe_split": {
                    "columns": ["user_id", "history"],
                    "data": [["u1", history], ["u2", []]],
                },
                "params": {"k": 5},
            },
        )
        served_first = records["predictions"]
        assert [row["user_id"] for row in served_first] == ["u1"]
        expected, _ = tiny_recommender(0).recommend([history], k=3)
        assert served_first[0]["item_ids"] == expected[0]
        assert len(served_first[0]["scores"]) == 3
        rows = split["predictions"]
        assert [len(row["item_ids"]) for row in rows] == [5, 5]
        assert not set(history) & set(rows[0]["item_ids"])  # history excluded
        assert rows[1]["item_ids"] == ["i0", "i1", "i2", "i3", "i4"]  # empty: popularity

        # A better candidate is promoted; a fresh load by alias returns it.
        second = promote_candidate(
            tiny_recommender(1), report(0.08, 0.05, 0.02), config, store, tags={"batch_ids": "b2"}
        )
        assert second.promoted and second.version != first.version
        fresh = mlflow.pyfunc.load_model("models:/recloop@champion")
        assert fresh.metadata.run_id == second.run_id
        new_expected, _ = tiny_recommender(1).recommend([history], k=3)
        assert new_expected != expected  # the two versions are told apart by their answers
        out = fresh.predict(
            pd.DataFrame({"user_id": ["u1"], "history": [history]}),
            params={"k": 3},
        )
        assert out["item_ids"][0] == new_expected[0]
        # A running server keeps the version it loaded at start: restart it after a promotion.
        again = _post(
            f"{base}/invocations",
            {"dataframe_records": [{"user_id": "u1", "history": history}], "params": {"k": 3}},
        )
        assert again["predictions"][0]["item_ids"] == expected[0]
    finally:
        _stop(proc)
    assert proc.poll() is not None


def test_rollback_moves_champion_back_and_says_why(store: Home, tmp_path: Path) -> None:
    # Its own registered model in the module's store: independent of the serving test.
    config_file = tmp_path / "rb.yaml"
    config_file.write_text(yaml.safe_dump({"registry": {"model_name": "rb"}}), encoding="utf-8")
    from recloop.config import load_config

    config = load_config(config_file)
    reg = registry.configure(store, config)
    v1 = promote_candidate(tiny_recommender(0), report(0.05, None, 0.02), config, store, tags={})
    v2 = promote_candidate(tiny_recommender(1), report(0.08, 0.05, 0.02), config, store, tags={})
    assert v1.promoted and v2.promoted and reg.champion_version() == v2.version

    runner = CliRunner()
    cli = ["--home", str(store.root), "--config", str(config_file)]
    result = runner.invoke(
        app, ["rollback", v1.version, "--reason", "v2 recommends sold-out items", *cli]
    )
    assert result.exit_code == 0, result.output
    assert f"version {v2.version} -> {v1.version}" in result.output
    assert reg.champion_version() == v1.version
    restored = reg.version_info(v1.version)["tags"]
    assert restored["rollback_reason"] == "v2 recommends sold-out items"
    assert restored["rollback_from"] == v2.version
    assert time.strptime(restored["rollback_at"], "%Y-%m-%dT%H:%M:%SZ")
    assert "v2 recommends sold-out items" in restored["champion_reason"]
    demoted = reg.version_info(v2.version)
    assert demoted["tags"]["demoted_to"] == v1.version
    assert demoted["tags"]["demoted_reason"] == "v2 recommends sold-out items"
    assert "champion" not in demoted["aliases"] and "challenger" in demoted["aliases"]
    loaded = mlflow.pyfunc.load_model("models:/rb@champion")
    assert loaded.metadata.run_id == v1.run_id

    # Unknown versions are refused with one line and a non-zero exit; nothing moves.
    for bad in ("7", "latest"):
        refused = runner.invoke(app, ["rollback", bad, *cli])
        assert refused.exit_code == 1
        lines = refused.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("recloop: "), refused.output
    assert "no version 7" in runner.invoke(app, ["rollback", "7", *cli]).output
    assert reg.champion_version() == v1.version

    # Rolling back to the current champion changes nothing.
    same = runner.invoke(app, ["rollback", v1.version, *cli])
    assert same.exit_code == 0 and "nothing changed" in same.output
