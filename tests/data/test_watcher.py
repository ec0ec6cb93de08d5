"""The landing-folder watcher lands dropped batches through the real validation: archived or
quarantined with a report, and removed from the landing folder only after that."""

from __future__ import annotations

from pathlib import Path

import pytest
from batch_helpers import make_interactions, make_items

from recloop.landing import archived_batches, batch_id_of, quarantined_batches
from recloop.orchestration import CLAIMED, LandingWatcher
from recloop.paths import get_home

pytestmark = pytest.mark.data


def _drop(landing: Path, name: str, interactions, items) -> tuple[Path, Path]:  # noqa: ANN001
    items_path = landing / f"{name}.items.csv"
    batch_path = landing / f"{name}.csv"
    items.to_csv(items_path, index=False)
    interactions.to_csv(batch_path, index=False)
    return batch_path, items_path


def test_watcher_archives_good_and_quarantines_bad_batches(tmp_path: Path) -> None:
    home = get_home(tmp_path / "home").ensure()
    watcher = LandingWatcher(home, settle=0.2, announce=False)
    catalogue = make_items([f"i{k}" for k in range(5)])
    good_batch, good_items = _drop(home.landing, "good", make_interactions(), catalogue)
    good_id = batch_id_of(good_batch, good_items)
    good_bytes = good_batch.read_bytes()
    bad = make_interactions(n_users=4)
    bad.loc[0, "user_id"] = None  # a null user id fails the suite
    bad_batch, bad_items = _drop(home.landing, "bad", bad, catalogue)
    bad_id = batch_id_of(bad_batch, bad_items)
    bad_bytes = bad_batch.read_bytes()

    outcomes = watcher.drain()

    statuses = {o.result.batch_id: o.result.status for o in outcomes}
    assert statuses == {good_id: "archived", bad_id: "quarantined"}
    assert all(o.announcement is None for o in outcomes)  # announce=False
    assert [b.batch_id for b in archived_batches(home)] == [good_id]
    assert [b.batch_id for b in quarantined_batches(home)] == [bad_id]
    # Each file left the landing folder, and its bytes are kept where it went.
    assert [p for p in home.landing.rglob("*") if p.is_file()] == []
    received = home.archive / good_id / "received"
    assert sorted(p.name for p in received.iterdir()) == ["good.csv", "good.items.csv"]
    assert (received / "good.csv").read_bytes() == good_bytes
    assert (home.quarantine / bad_id / "received" / "bad.csv").read_bytes() == bad_bytes
    assert "user_id" in (home.quarantine / bad_id / "report.md").read_text()


def test_a_claim_whose_landing_failed_is_kept_and_retried(tmp_path: Path) -> None:
    home = get_home(tmp_path / "home").ensure()
    claim = home.landing / CLAIMED / "earlier"
    claim.mkdir(parents=True)
    make_interactions().to_csv(claim / "late.csv", index=False)
    make_items([f"i{k}" for k in range(5)]).to_csv(claim / "late.items.csv", index=False)
    batch_id = batch_id_of(claim / "late.csv", claim / "late.items.csv")
    # A new watcher (e.g. after a crash mid-landing) lands what an earlier one had claimed.
    [outcome] = LandingWatcher(home, settle=0.2, announce=False).poll()
    assert outcome.result.batch_id == batch_id and outcome.result.status == "archived"
    assert not claim.exists()


def test_recloop_watch_once_lands_what_the_folder_holds(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from recloop.cli import app

    home = get_home(tmp_path / "home").ensure()
    _drop(home.landing, "b1", make_interactions(), make_items([f"i{k}" for k in range(5)]))
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["watch", "--once", "--home", str(home.root)])
    assert result.exit_code == 0, result.output
    assert "landed 1 batch(es): 1 archived" in result.stdout
    assert "not announced (PREFECT_API_URL is not set)" in result.stderr
    assert len(archived_batches(home)) == 1


def test_recloop_watch_once_exits_1_when_a_batch_is_rejected(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from recloop.cli import app

    home = get_home(tmp_path / "home").ensure()
    catalogue = make_items([f"i{k}" for k in range(5)])
    _drop(home.landing, "good", make_interactions(), catalogue)
    bad = make_interactions(n_users=4)
    bad.loc[0, "user_id"] = None
    _drop(home.landing, "bad", bad, catalogue)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(app, ["watch", "--once", "--home", str(home.root)])
    assert result.exit_code == 1, result.output
    assert "landed 2 batch(es): 1 archived, 1 quarantined" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "recloop: 1 of 2 batch(es) rejected (quarantined); see above"
    )
    assert len(archived_batches(home)) == 1 and len(quarantined_batches(home)) == 1
