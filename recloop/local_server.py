"""A temporary Prefect server for one recloop command, that cannot outlive it.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in a subprocess when a flow first
runs and stops it at exit, but a command killed with SIGKILL never reaches its exit handlers and
leaves that server running, orphaned. The commands that run flows (``run``, ``update``,
``retrain``) start their own instead, the same server app on 127.0.0.1, as a child that watches
its parent: when the command is gone, however it ended, the server stops itself within seconds.

Run as ``python -m recloop.local_server PORT PARENT_PID`` by :func:`prefect_api` only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger(__name__)

# What Prefect's own temporary server runs with: no UI, marked ephemeral.
SERVER_ENV = {
    "PREFECT_UI_ENABLED": "0",
    "PREFECT__SERVER_EPHEMERAL": "1",
    "PREFECT__SERVER_FINAL": "1",
}
PARENT_POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def prefect_api() -> Iterator[str | None]:
    """Within the block, flows talk to a temporary server that dies with this process; yields
    its API URL. With ``PREFECT_API_URL`` set, the user's server is used and nothing starts
    (yields None)."""
    import httpx
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    if PREFECT_API_URL.value():
        yield None
        return
    port = _free_port()
    env = {
        **os.environ,
        **SERVER_ENV,
        **get_current_settings().to_environment_variables(exclude_unset=True),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "recloop.local_server", str(port), str(os.getpid())], env=env
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + float(
            PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        )
        with httpx.Client() as client:
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the temporary Prefect server exited ({server.returncode})")
                try:
                    if client.get(f"{url}/health", timeout=2.0).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the temporary Prefect server did not start at {url}")
                time.sleep(0.2)
        logger.debug("temporary Prefect server at %s (pid %d)", url, server.pid)
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _stop_when_orphaned(parent: int) -> None:
    """Ask this process to stop (as ``terminate`` would) once ``parent`` is gone; force it if
    it has not stopped a little later."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE_SECONDS)
    os._exit(0)


def main(argv: list[str]) -> None:
    import uvicorn

    port, parent = int(argv[0]), int(argv[1])
    if os.getppid() != parent:  # the command is already gone
        return
    threading.Thread(target=_stop_when_orphaned, args=(parent,), daemon=True).start()
    uvicorn.run(
        "prefect.server.api.server:create_app",
        factory=True,
        host="127.0.0.1",
        port=port,
        log_level="error",
        lifespan="on",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
