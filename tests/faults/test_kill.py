"""A recloop command killed with SIGKILL leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recloop.data import write_dataset
from recloop.demo import simulate
from recloop.landing import land_batch
from recloop.paths import get_home

pytestmark = pytest.mark.faults


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_prefect_server(cmdline: str) -> bool:
    """recloop's temporary server, or Prefect's own (``uvicorn ... server:create_app``)."""
    return "recloop.local_server" in cmdline or "prefect.server.api.server:create_app" in cmdline


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process table from /proc")
def test_killed_update_takes_its_temporary_prefect_server_with_it(tmp_path: Path) -> None:
    home = get_home(tmp_path / "home").ensure()
    data = write_dataset(simulate(seed=1, n_users=40, n_items=30), tmp_path / "shop", fmt="csv")
    assert land_batch(home, data / "interactions.csv", data / "items.csv").status == "archived"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    update = subprocess.Popen(
        [sys.executable, "-m", "recloop.cli", "update", "--home", str(home.root)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        servers: list[int] = []
        while not servers and time.monotonic() < deadline and update.poll() is None:
            servers = [p for p in _children(update.pid) if _is_prefect_server(_cmdline(p))]
            time.sleep(0.2)
        assert servers, "the update started no temporary Prefect server"
        os.kill(update.pid, signal.SIGKILL)
        update.wait()
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(p) for p in servers), "the temporary Prefect server outlived recloop"
    finally:
        if update.poll() is None:
            update.kill()
