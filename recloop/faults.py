"""Named points where a test can kill recloop, to show that no kill leaves anything half-done.

With ``RECLOOP_KILL_AT=<point>`` in its environment, a recloop process sends itself SIGKILL when
it reaches that point: no exit handler, no ``finally``, as a power cut or the OOM killer would
stop it. The fault suite (``tests/faults``) kills a cycle at each point and checks what the
rerun makes of it. Unset (always, outside those tests), :func:`point` does nothing.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "RECLOOP_KILL_AT"

POINTS = (
    "landed",  # a batch folder is in place, before its ledger line
    "trained",  # the candidate is trained, nothing of it registered
    "registered",  # its version exists (with the gate's decision), no alias moved yet
    "challenger",  # challenger points at it, champion not moved yet
)


def point(name: str) -> None:
    """SIGKILL this process when ``RECLOOP_KILL_AT`` names ``name``."""
    if name not in POINTS:
        raise ValueError(f"unknown fault point {name!r} (known: {', '.join(POINTS)})")
    if os.environ.get(KILL_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
