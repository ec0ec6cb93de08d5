"""Progress bars appear only for a person at a terminal; pipes, files and CI stay plain. The
console is quiet: recloop's warnings in one line, the libraries' noise in the logs only."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recloop.progress import (
    LIBRARY_LOGGER,
    STAGES,
    library_output,
    progress_wanted,
    setup_console,
    step_progress,
    working,
)

pytestmark = pytest.mark.unit


def test_a_terminal_gets_a_bar_but_not_a_pipe_a_dumb_terminal_or_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as terminal:
        assert progress_wanted(terminal)
        monkeypatch.setenv("TERM", "dumb")
        assert not progress_wanted(terminal)
        monkeypatch.setenv("TERM", "xterm")
        monkeypatch.setenv("CI", "true")
        assert not progress_wanted(terminal)
    os.close(leader)
    assert not progress_wanted(io.StringIO())


def test_without_a_terminal_the_context_yields_nothing_and_writes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with step_progress(3, "window") as progress:  # pytest's captured stderr is no terminal
        assert progress is None
    assert capsys.readouterr().err == ""


def test_lines_for_a_redirected_stdout_stay_plain(capsys: pytest.CaptureFixture[str]) -> None:
    """Forced on (stderr a terminal, stdout a file): table lines reach stdout byte for byte."""
    with step_progress(2, "window", enabled=True) as progress:
        assert progress is not None
        progress.start(1, "training")
        progress.echo("     1 abc  promoted")
        progress.echo("window 1: quarantined", err=True)
        progress.finish(1, "version 1 promoted")
    captured = capsys.readouterr()
    assert captured.out == "     1 abc  promoted\n"
    assert "window 1: quarantined" in captured.err


def test_working_shows_a_spinner_only_when_enabled(capsys: pytest.CaptureFixture[str]) -> None:
    with working("update"):  # no terminal: nothing
        pass
    assert capsys.readouterr().err == ""
    with working("bench quality", enabled=True):
        pass
    assert "bench quality 1/1 done" in capsys.readouterr().err


@pytest.fixture
def console() -> Iterator[None]:
    """Leave the root logger and Python's warnings as the test found them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def test_the_quiet_console_shows_recloops_warnings_in_one_line_and_no_library_noise(
    console: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from recloop.landing import archived_batches
    from recloop.paths import get_home

    home = get_home(tmp_path).ensure()
    home.ledger.write_text('{"torn": \n', encoding="utf-8")  # a crash while appending
    capsys.readouterr()
    setup_console(verbose=False)
    # Records logged by code outside recloop (here: this test) are the libraries' noise.
    logging.getLogger("great_expectations").info("Created temporary directory")
    logging.getLogger("great_expectations").warning("a library's warning")
    logging.getLogger("prefect").info("Starting temporary server")
    logging.getLogger("recloop.demo").info("demo data: 600 users")
    logging.getLogger("py.warnings").warning("torch/nn/modules.py:1: UserWarning: a warning")
    assert archived_batches(home) == []  # recloop's own code warns about the torn line
    err = capsys.readouterr().err
    assert err.startswith(f"recloop: warning: {home.ledger}:1: ignoring unreadable ledger line")
    assert len(err.splitlines()) == 1

    setup_console(verbose=True)  # replaces the quiet handler: every library's INFO, timed
    logging.getLogger("great_expectations").info("Created temporary directory")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("INFO great_expectations: Created temporary directory")


def test_the_quiet_console_still_passes_info_records_on_to_the_logs(
    console: None, caplog: pytest.LogCaptureFixture
) -> None:
    setup_console(verbose=False)
    with caplog.at_level(logging.INFO, logger="recloop"):
        logging.getLogger("recloop.demo").info("demo data: 600 users")
    assert "demo data: 600 users" in caplog.text  # what the Prefect API handler would get


def test_what_libraries_print_to_stderr_during_a_flow_becomes_log_records(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LIBRARY_LOGGER), library_output():
        print("Registered model 'recloop' already exists.", file=sys.stderr)
        sys.stderr.write("Downloading artifacts: 0%\rDownloading artifacts: 100%")
    assert capsys.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if r.name == LIBRARY_LOGGER] == [
        "Registered model 'recloop' already exists.",
        "Downloading artifacts: 0%",
        "Downloading artifacts: 100%",
    ]
    with library_output(quiet=False):  # --verbose: untouched
        print("banner", file=sys.stderr)
    assert capsys.readouterr().err == "banner\n"


def test_the_bar_moves_through_the_stages_of_each_step() -> None:
    with step_progress(2, "window", enabled=True) as bar:
        assert bar is not None
        task = bar._progress.tasks[0]
        assert task.total == 2 * len(STAGES)
        bar.start(1)
        bar.stage("validate")
        assert task.completed == 0 and task.description == "window 1/2: validate"
        bar.stage("load_champion")  # between stages: named, not counted
        assert task.completed == 0 and task.description == "window 1/2: load champion"
        bar.stage("fine_tune")
        assert task.completed == 3 and task.description == "window 1/2: fine-tune"
        bar.finish(1, "version 1 promoted")
        assert task.completed == len(STAGES)
        bar.start(2)
        bar.stage("promote")
        assert task.completed == len(STAGES) + 5 and task.description == "window 2/2: promote"
