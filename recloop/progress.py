"""Progress bars for the command line: on stderr, and only for a person at a terminal.

Piped, redirected or CI output (and typer's test runner) gets no bar and no control codes, so what
a script or test parses stays exactly as it was. At a terminal, a rich bar sits at the bottom of
stderr and every log line (Prefect's and recloop's) scrolls above it instead of through it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


def progress_wanted(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal and not a CI log."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return False
    return not (os.environ.get("CI") or os.environ.get("TERM") == "dumb")


class StepProgress:
    """One bar over ``total`` steps (e.g. replayed windows) with a status line per step."""

    def __init__(self, progress: Any, task_id: Any, total: int, label: str) -> None:
        self._progress = progress
        self._task = task_id
        self._total = total
        self._label = label
        self._done = 0
        self._stdout = sys.stdout  # before rich may swap it for its proxy
        self._stdout_is_terminal = sys.stdout.isatty()

    def echo(self, message: str, err: bool = False) -> None:
        """Print a line without tearing the bar (``typer.echo``'s signature, as far as used).

        click writes to the raw stream under any proxy, so lines for the terminal go through
        rich instead; stdout redirected to a file or pipe gets its line unchanged.
        """
        if err or self._stdout_is_terminal:
            self._progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            self._stdout.write(message + "\n")
            self._stdout.flush()

    def start(self, step: int, what: str = "") -> None:
        """Show that step ``step`` (1-based) is running."""
        text = f"{self._label} {step}/{self._total}" + (f": {what}" if what else "")
        self._progress.update(self._task, description=text)

    def finish(self, step: int, outcome: str = "") -> None:
        """Mark step ``step`` done; ``outcome`` stays shown until the next step starts."""
        self._done += 1
        text = f"{self._label} {step}/{self._total} done" + (f": {outcome}" if outcome else "")
        self._progress.update(self._task, completed=self._done, description=text)


def _console_handlers(stream: Any) -> list[logging.Handler]:
    """Every logging handler writing to ``stream`` (root and named loggers)."""
    loggers: list[Any] = [logging.getLogger()]
    loggers += [lg for lg in logging.Logger.manager.loggerDict.values() if hasattr(lg, "handlers")]
    found: list[logging.Handler] = []
    for lg in loggers:
        for handler in lg.handlers:
            if getattr(handler, "stream", None) is stream and handler not in found:
                found.append(handler)
    return found


@contextlib.contextmanager
def _logs_through(original: Any, proxy: Any) -> Iterator[None]:
    """Point the handlers that write to ``original`` at ``proxy`` for the duration.

    Logging handlers keep the stream they were built with, so the rich redirect of sys.stderr
    alone would miss them and their lines would tear the bar. Prefect's console handler prints
    through its own rich Console, whose file is switched too.
    """
    handlers = _console_handlers(original)
    for handler in handlers:
        handler.stream = proxy  # type: ignore[attr-defined]
        console = getattr(handler, "console", None)
        if console is not None:
            console.file = proxy
    try:
        yield
    finally:
        for handler in handlers:
            handler.stream = original  # type: ignore[attr-defined]
            console = getattr(handler, "console", None)
            if console is not None:
                console.file = original


@contextlib.contextmanager
def step_progress(
    total: int, label: str, enabled: bool | None = None
) -> Iterator[StepProgress | None]:
    """A bar over ``total`` steps on stderr, or None when ``enabled`` is False (default: only
    when stderr is an interactive terminal, see :func:`progress_wanted`)."""
    if not (progress_wanted() if enabled is None else enabled):
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    original = sys.stderr
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=original),
        # Redirect stdout only when it shares the terminal: a redirected stdout keeps its lines.
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=True,
        refresh_per_second=4,  # the bar moves once per window; spare the shared cores
    )
    with progress:
        task_id = progress.add_task(f"{label} 1/{total}", total=total)
        with _logs_through(original, sys.stderr):  # sys.stderr is rich's proxy from here on
            yield StepProgress(progress, task_id, total, label)


@contextlib.contextmanager
def working(what: str, enabled: bool | None = None) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while one long call (a whole cycle, a benchmark)
    runs; nothing unless stderr is an interactive terminal (see :func:`step_progress`)."""
    with step_progress(1, what, enabled) as progress:
        if progress:
            progress.start(1, "running")
        yield
        if progress:
            progress.finish(1)
