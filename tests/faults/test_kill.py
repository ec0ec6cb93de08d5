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


TINY = {
    "encoder": {"max_steps": 2, "head_warmup_steps": 0, "batch_size": 8, "max_length": 32},
    "model": {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "max_seq_len": 20},
    "train": {"epochs": 4, "finetune_epochs": 2, "patience": 2},
}


def _recloop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recloop.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path, list[tuple[Path, Path]], dict[str, str]]:
    """A home whose champion learned window 1; window 2 staged, not landed; the config file
    and the environment of every command."""
    import yaml

    from recloop.replay import stage_windows

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    data = write_dataset(simulate(seed=3, n_users=150, n_items=200), tmp_path / "demo")
    home = tmp_path / "home"
    staged = stage_windows(data, 2, home, config)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "RECLOOP_KILL_AT")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    common = ["--home", str(home), "--config", str(config)]
    (batch, items) = staged[0]
    assert _recloop("ingest", str(batch), "--items", str(items), *common, env=env).returncode == 0
    first = _recloop("update", *common, env=env)
    assert first.returncode == 0, first.stderr
    return home, config, staged, env


def _registry(home: Path):
    from recloop import registry
    from recloop.config import load_config

    return registry.configure(get_home(home), load_config())


@pytest.mark.parametrize("where", ["trained", "registered", "challenger"])
def test_a_cycle_killed_anywhere_is_finished_once_by_the_rerun(shop, where: str) -> None:
    """Killed after training, after registering its version (the decision attached), or after
    moving challenger: the rerun leaves exactly one judged candidate for the batch, with its
    decision carried out, every version tagged with its decision, and a champion that loads."""
    home, config, staged, env = shop
    common = ["--home", str(home), "--config", str(config)]
    reg = _registry(home)
    before = reg.champion_version()
    assert before is not None
    batch, items = staged[1]
    assert _recloop("ingest", str(batch), "--items", str(items), *common, env=env).returncode == 0

    killed = _recloop("update", *common, env={**env, "RECLOOP_KILL_AT": where})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    again = _recloop("update", *common, env=env)
    assert again.returncode == 0, again.stderr

    reg = _registry(home)
    versions = reg.list_versions()
    judged = [v for v in versions if v["tags"].get("parent_version") == before]
    learned = [v for v in judged if v["tags"].get("model_kind", "learned") == "learned"]
    assert len(learned) == 1, [v["tags"].get("batch_ids") for v in judged]
    assert all({"gate", "reason"} <= set(v["tags"]) for v in versions)
    champion = reg.champion_version()
    [candidate] = learned
    if candidate["tags"]["gate"] == "passed":
        assert champion == candidate["version"]
    elif not candidate["tags"]["reason"].startswith("serve "):
        assert champion == before  # kept
    assert reg.load_version(champion) is not None
    # Nothing left running from the killed cycle, and a third run has nothing to do.
    third = _recloop("update", *common, env=env)
    assert third.returncode == 0 and "up-to-date" in third.stdout, third.stdout
    assert len(_registry(home).list_versions()) == len(versions)
