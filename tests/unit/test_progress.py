"""Progress bars appear only for a person at a terminal; pipes, files and CI stay plain."""

from __future__ import annotations

import io
import os

import pytest

from recloop.progress import progress_wanted, step_progress, working

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
