"""A tracking server that does not answer: one line, within a minute, nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from recloop.data import write_dataset
from recloop.demo import simulate
from recloop.landing import archived_batches, land_batch
from recloop.paths import get_home
from recloop.registry import RegistryUnreachable, check_reachable

pytestmark = pytest.mark.faults

DOWN = "http://127.0.0.1:9"  # the discard port: nothing listens there


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def _serve(status: int) -> ThreadingHTTPServer:
    handler = type("Health", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_check_reachable_asks_the_servers_health(monkeypatch: pytest.MonkeyPatch) -> None:
    from recloop import registry

    monkeypatch.setattr(registry, "HEALTH_PAUSE", 0.0)
    check_reachable("sqlite:////nowhere/mlflow.db")  # a local store: nothing to ask
    up, failing = _serve(200), _serve(503)
    try:
        check_reachable(f"http://127.0.0.1:{up.server_port}")
        with pytest.raises(RegistryUnreachable, match="HTTP 503 from /health"):
            check_reachable(f"http://127.0.0.1:{failing.server_port}/")
    finally:
        up.shutdown()
        failing.shutdown()
    with pytest.raises(RegistryUnreachable, match=r"127\.0\.0\.1:9 does not answer \(\[Errno"):
        check_reachable(DOWN)


def test_update_with_the_tracking_server_down_fails_in_one_line(tmp_path: Path) -> None:
    home = get_home(tmp_path / "home").ensure()
    data = write_dataset(simulate(seed=1, n_users=20, n_items=30), tmp_path / "shop", fmt="csv")
    landed = land_batch(home, data / "interactions.csv", data / "items.csv")
    assert landed.status == "archived", landed.message
    env = {**os.environ, "MLFLOW_TRACKING_URI": DOWN, "PREFECT_HOME": str(tmp_path / "prefect")}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "recloop.cli", "update", "--home", str(home.root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"recloop: the MLflow tracking server at {DOWN} does not answer")
    assert "landed batches stay pending" in lines[0]
    assert seconds < 60
    # Nothing was trained or registered; the batch is still archived, waiting.
    assert [b.batch_id for b in archived_batches(home)] == [landed.batch_id]
    assert not home.mlflow_db.exists() and not any(home.root.glob("checkpoints/*"))
