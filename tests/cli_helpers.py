"""Reading the CLI's output in tests.

Imported by name (``from cli_helpers import ...``) from any test folder, like registry_helpers.
"""

from __future__ import annotations

import re


def table_rows(output: str) -> list[list[str]]:
    """The rows of the table ``recloop run`` (and ``retrain``) print: ten columns, then the
    decision and what serves afterwards, each one cell though they may hold spaces (``kept
    champion``, ``v2 recent popularity``). Log lines (stderr, mixed in by the test runner) may
    surround the table."""
    lines = output.strip().splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("window"))
    rows = []
    for line in lines[header + 2 :]:
        if not re.match(r"^\s+\d+\s", line):
            continue
        cells = line.split()
        tail = re.match(r"(promoted|kept champion|baseline wins) (.*)$", " ".join(cells[10:]))
        assert tail is not None, f"not a table row: {line!r}"
        rows.append([*cells[:10], *tail.groups()])
    return rows
