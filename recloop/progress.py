"""What the command line shows while it works: a quiet console and progress bars.

**Quiet console.** By default the console gets recloop's own warnings and errors, one line each
(``recloop: warning: ...``), and nothing of the libraries' banners and INFO lines; ``--verbose``
shows every library's INFO log with times and logger names. Either way the records still reach
the Prefect run logs (recloop's loggers are Prefect "extra loggers"), and what libraries print
straight to stderr while a flow runs (MLflow's "Created version ..." lines, download bars) is
turned into log records of ``recloop.console`` instead of console lines (:func:`library_output`).

**Progress bars.** On stderr, and only for a person at a terminal: piped, redirected or CI output
(and typer's test runner) gets no bar and no control codes, so what a script or test parses stays
plain. At a terminal a rich bar sits at the bottom of stderr, moves through the stages of each
step (validate, clean text, pretrain, fine-tune, evaluate, promote) as Prefect runs their tasks
(:func:`follow_task_runs`), and every log line scrolls above it instead of through it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

# The stages of a cycle as the bar names them, by Prefect task name, in the order they run.
STAGES: dict[str, str] = {
    "validate": "validate",
    "clean_text": "clean text",
    "pretrain": "pretrain",
    "fine_tune": "fine-tune",
    "evaluate": "evaluate",
    "promote": "promote",
}
LIBRARY_LOGGER = "recloop.console"  # what libraries print to stderr during a flow, as records
_OWN_CODE = tuple(
    str(root / package) + os.sep
    for root in {Path(__file__).parents[1], Path(__file__).resolve().parents[1]}
    for package in ("recloop", "tasks", "flows", "models", "benchmarks")
)


# --------------------------------------------------------------------------------------------
# The console


def _console_stream() -> TextIO:
    """Where console lines go now: sys.stderr (a test runner's, or the bar's proxy), never into
    :class:`_LibraryOutput`, which would turn them back into records."""
    stream: Any = sys.stderr
    while isinstance(stream, _LibraryOutput):
        stream = stream.target
    return stream


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes to the current stderr, looked up per record.

    (Its name does not start with "_": Prefect, when imported, keeps the root logger's handlers
    only if one looks like the user's, and otherwise puts its own console handler there.)
    """

    def __init__(self) -> None:
        super().__init__(_console_stream())

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = _console_stream()
        super().emit(record)


class _QuietFilter(logging.Filter):
    """Warnings and errors that recloop's code logs through its own loggers. The libraries'
    records stay in the logs, and so do the flows' run-logger lines: those are written for the
    Prefect UI, and the command reports the same outcome (or failure) in its own line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return (
            record.levelno >= logging.WARNING
            and record.pathname.startswith(_OWN_CODE)
            and not record.name.startswith("prefect")
        )


class _OneLine(logging.Formatter):
    """``recloop: warning: <first line of the message>``; tracebacks stay in the logs."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().strip().splitlines()
        return f"recloop: {record.levelname.lower()}: {message[0] if message else ''}"


def quiet_environment() -> None:
    """Library settings for a quiet console (the user's own settings win)."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def setup_console(verbose: bool) -> logging.Handler:
    """Log to the console for the command line: quiet (see the module doc) or ``verbose``.

    Replaces an earlier call's handler. The root logger passes INFO on, so that recloop's INFO
    records reach the Prefect run logs whatever the console shows; Python warnings are logged
    (``py.warnings``) rather than printed.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ConsoleHandler)]:
        root.removeHandler(handler)
    handler = ConsoleHandler()
    if verbose:
        handler.setLevel(logging.INFO)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        )
    else:
        quiet_environment()
        handler.setLevel(logging.WARNING)
        handler.addFilter(_QuietFilter())
        handler.setFormatter(_OneLine())
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    return handler


class _LibraryOutput(io.TextIOBase):
    """A stderr stand-in that turns each line written to it into an INFO record."""

    def __init__(self, target: TextIO, logger: logging.Logger) -> None:
        self.target = target
        self._logger = logger
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._pending += text.replace("\r", "\n")
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if line.strip():
                self._logger.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def library_output(quiet: bool = True) -> Iterator[None]:
    """While a flow runs, what libraries write to stderr goes to the logs (``recloop.console``)
    instead of the console; nothing changes unless ``quiet``."""
    if not quiet:
        yield
        return
    shim = _LibraryOutput(sys.stderr, logging.getLogger(LIBRARY_LOGGER))
    with contextlib.redirect_stderr(shim):  # type: ignore[type-var]
        yield
    shim.write("\n")  # a last line without its newline


def is_quiet() -> bool:
    """Whether :func:`setup_console` made the console quiet (no handler: quiet too)."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, ConsoleHandler)]
    return not handlers or handlers[-1].level > logging.INFO


# --------------------------------------------------------------------------------------------
# Following Prefect's task runs


class _TaskRunHandler(logging.Handler):
    """Calls ``on_task(task_name)`` when a record comes from a task run other than the last."""

    def __init__(self, on_task: Callable[[str], None]) -> None:
        super().__init__(logging.DEBUG)
        self._on_task = on_task
        self._last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        run, name = getattr(record, "task_run_id", None), getattr(record, "task_name", None)
        if run and name and run != self._last:
            self._last = run
            self._on_task(name)


@contextlib.contextmanager
def follow_task_runs(on_task: Callable[[str], None]) -> Iterator[None]:
    """Call ``on_task(task_name)`` as each Prefect task run of this process starts.

    Prefect's task-run records carry the task's name; the first one of a run is the engine's
    DEBUG "Executing task ...", so the task-run logger passes DEBUG on for the duration while its
    other handlers (the Prefect API's) keep to INFO: the run logs stay as they were.
    """
    task_runs = logging.getLogger("prefect.task_runs")
    handler = _TaskRunHandler(on_task)
    level = task_runs.level
    lowered = []
    if task_runs.getEffectiveLevel() > logging.DEBUG:
        lowered = [(h, h.level) for h in task_runs.handlers if h.level < logging.INFO]
        for other, _ in lowered:
            other.setLevel(logging.INFO)
        task_runs.setLevel(logging.DEBUG)
    task_runs.addHandler(handler)
    try:
        yield
    finally:
        task_runs.removeHandler(handler)
        task_runs.setLevel(level)
        for other, other_level in lowered:
            other.setLevel(other_level)


# --------------------------------------------------------------------------------------------
# Progress bars


def progress_wanted(stream: TextIO | None = None) -> bool:
    """True when ``stream`` (default stderr) is an interactive terminal and not a CI log."""
    stream = stream if stream is not None else sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is None or not isatty():
        return False
    return not (os.environ.get("CI") or os.environ.get("TERM") == "dumb")


class StepProgress:
    """One bar over ``total`` steps (e.g. replayed windows), each through the :data:`STAGES`."""

    def __init__(self, progress: Any, task_id: Any, total: int, label: str) -> None:
        self._progress = progress
        self._task = task_id
        self._total = total
        self._label = label
        self._step = 1
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

    def _show(self, stages_done: int, what: str) -> None:
        text = f"{self._label} {self._step}/{self._total}" + (f": {what}" if what else "")
        completed = (self._step - 1) * len(STAGES) + stages_done
        self._progress.update(self._task, completed=completed, description=text)

    def start(self, step: int, what: str = "") -> None:
        """Show that step ``step`` (1-based) is running."""
        self._step = step
        self._show(0, what)

    def stage(self, task_name: str) -> None:
        """Show the task run that started (a Prefect task name); the bar moves at each stage."""
        names = list(STAGES)
        if task_name in STAGES:
            self._show(names.index(task_name), STAGES[task_name])
        else:  # a step between stages (load the champion, prepare the data): named, not counted
            self._progress.update(
                self._task,
                description=f"{self._label} {self._step}/{self._total}: "
                + task_name.replace("_", " "),
            )

    def finish(self, step: int, outcome: str = "") -> None:
        """Mark step ``step`` done; ``outcome`` stays shown until the next step starts."""
        text = f"{self._label} {step}/{self._total} done" + (f": {outcome}" if outcome else "")
        self._step = step
        self._progress.update(self._task, completed=step * len(STAGES), description=text)


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
    through its own rich Console, whose file is switched too. (recloop's own console handler looks
    sys.stderr up per record and needs no switching.)
    """
    handlers = [h for h in _console_handlers(original) if not isinstance(h, ConsoleHandler)]
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
    when stderr is an interactive terminal, see :func:`progress_wanted`). While it shows, the
    Prefect task runs of this process move it through each step's stages."""
    if not (progress_wanted() if enabled is None else enabled):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    original = sys.stderr
    console = Console(file=original)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=console.is_terminal,  # at a terminal the bar goes; the lines printed stay
        # Redirect stdout only when it shares the terminal: a redirected stdout keeps its lines.
        redirect_stdout=sys.stdout.isatty(),
        redirect_stderr=True,
        refresh_per_second=4,  # spare the shared cores
    )
    with progress:
        task_id = progress.add_task(f"{label} 1/{total}", total=total * len(STAGES))
        steps = StepProgress(progress, task_id, total, label)
        with _logs_through(original, sys.stderr), follow_task_runs(steps.stage):
            yield steps  # sys.stderr is rich's proxy from here on


@contextlib.contextmanager
def working(what: str, enabled: bool | None = None) -> Iterator[None]:
    """A bar with the elapsed time on stderr while one long call (a whole cycle, a benchmark)
    runs, moving through a cycle's stages; nothing unless stderr is an interactive terminal
    (see :func:`step_progress`)."""
    with step_progress(1, what, enabled) as progress:
        if progress:
            progress.start(1, "running")
        yield
        if progress:
            progress.finish(1)
