"""Landing batches: archive, quarantine with a report, duplicates, nothing half-applied."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from batch_helpers import T0, make_interactions, make_items

from recloop import landing
from recloop.landing import (
    LandingError,
    archived_batches,
    batch_id_of,
    land_batch,
    pending_batches,
    quarantined_batches,
    read_archive,
)
from recloop.paths import Home

pytestmark = pytest.mark.data

ITEM_IDS = [f"i{k}" for k in range(5)]


def _archive_listing(home: Home) -> list[str]:
    if not home.archive.exists():
        return []
    return sorted(str(p.relative_to(home.archive)) for p in home.archive.rglob("*"))


def _first_batch(home: Home, write_csv) -> landing.LandingResult:
    result = land_batch(
        home,
        write_csv(make_interactions(), "batch1.csv"),
        write_csv(make_items(ITEM_IDS), "items1.csv"),
    )
    assert result.status == "archived", result.message
    return result


def test_valid_batch_is_archived(home: Home, write_csv) -> None:
    interactions_file = write_csv(make_interactions(), "batch1.csv")
    items_file = write_csv(make_items(ITEM_IDS), "items1.csv")
    result = land_batch(home, interactions_file, items_file)

    assert result.status == "archived"
    assert result.batch_id == batch_id_of(interactions_file, items_file)
    assert len(result.batch_id) == 16
    assert result.rows == 12 and result.item_rows == 5
    assert result.report is not None and result.report.success
    folder = home.archive / result.batch_id
    assert result.path == folder
    for name in ("interactions.parquet", "items.parquet", "manifest.json"):
        assert (folder / name).is_file()
    assert (folder / "received" / "batch1.csv").read_bytes() == interactions_file.read_bytes()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["batch_id"] == result.batch_id and manifest["rows"]["interactions"] == 12

    (record,) = archived_batches(home)
    assert (record.seq, record.batch_id, record.status) == (1, result.batch_id, "archived")
    ledger = [json.loads(line) for line in home.ledger.read_text().splitlines()]
    assert ledger[0]["files"] == {"interactions": "batch1.csv", "items": "items1.csv"}

    data = read_archive(home)
    assert len(data.interactions) == 12 and sorted(data.items["item_id"]) == ITEM_IDS
    assert data.interactions["timestamp"].dtype == "int64"
    assert json.dumps(result.to_dict())
    assert not list(home.root.glob(".landing-*")), "no staging folder left behind"


def _null_ids() -> pd.DataFrame:
    frame = make_interactions()
    frame["user_id"] = frame["user_id"].astype(object)
    frame.loc[3, "user_id"] = None
    return frame


def _out_of_range() -> pd.DataFrame:
    frame = make_interactions()
    frame.loc[5, "timestamp"] = -10
    frame.loc[6, "timestamp"] = 7_258_118_400  # the year 2200
    return frame


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (make_interactions().drop(columns=["item_id"]), "batch.csv: column item_id is required"),
        (_null_ids(), "batch.csv: row 3: user_id must not be null"),
        (_out_of_range(), "batch.csv: row 5: timestamp must be between 0 and now + 1 day"),
    ],
    ids=["missing columns", "null ids", "out-of-range timestamps"],
)
def test_bad_batch_is_quarantined_with_a_readable_report(
    home: Home, write_csv, frame: pd.DataFrame, expected: str
) -> None:
    first = _first_batch(home, write_csv)
    before = _archive_listing(home)
    bad_file = write_csv(frame, "batch.csv")

    result = land_batch(home, bad_file)

    assert result.status == "quarantined"
    assert result.message.startswith(f"batch {result.batch_id} quarantined: {expected}")
    folder = home.quarantine / result.batch_id
    assert result.path == folder
    assert (folder / "received" / "batch.csv").read_bytes() == bad_file.read_bytes()
    report = json.loads((folder / "report.json").read_text())
    assert report["success"] is False and report["failures"][0]["file"] == "batch.csv"
    markdown = (folder / "report.md").read_text()
    assert "# Validation report" in markdown and "batch.csv" in markdown
    # The archive is untouched.
    assert _archive_listing(home) == before
    assert [r.batch_id for r in archived_batches(home)] == [first.batch_id]
    assert [r.batch_id for r in quarantined_batches(home)] == [result.batch_id]
    assert len(read_archive(home).interactions) == 12


def test_same_batch_twice_is_a_duplicate(home: Home, write_csv) -> None:
    first = _first_batch(home, write_csv)
    again = land_batch(
        home, home.archive / first.batch_id / "received" / "batch1.csv",
        home.archive / first.batch_id / "received" / "items1.csv",
    )  # fmt: skip
    assert again.status == "duplicate" and again.batch_id == first.batch_id
    assert "already archived" in again.message and again.path == first.path
    assert len(archived_batches(home)) == 1
    assert len(home.ledger.read_text().splitlines()) == 1


def test_quarantined_batch_twice_is_a_duplicate(home: Home, write_csv) -> None:
    bad = write_csv(_null_ids(), "bad.csv")
    first = land_batch(home, bad, write_csv(make_items(ITEM_IDS), "items.csv"))
    again = land_batch(home, bad, write_csv(make_items(ITEM_IDS), "items.csv"))
    assert first.status == "quarantined" and again.status == "duplicate"
    assert "already quarantined" in again.message and str(first.path) in again.message


def test_later_items_override_earlier_ones(home: Home, write_csv) -> None:
    first = _first_batch(home, write_csv)
    later = make_interactions(n_users=2, per_user=2)
    later["timestamp"] += 10_000
    second = land_batch(
        home,
        write_csv(later, "batch2.csv"),
        write_csv(make_items(["i1", "i9"], title_prefix="New"), "items2.csv"),
    )
    assert second.status == "archived", second.message
    items = read_archive(home).items.set_index("item_id")
    assert items.loc["i1", "title"] == "New i1"  # replaced by the later batch
    assert items.loc["i2", "title"] == "Title i2"  # untouched
    assert "i9" in items.index and len(items) == 6
    assert len(read_archive(home).interactions) == 16
    # Subsets and pending batches follow landing order.
    assert len(read_archive(home, [second.batch_id]).interactions) == 4
    assert [r.batch_id for r in pending_batches(home, {first.batch_id})] == [second.batch_id]
    with pytest.raises(LandingError, match="not archived"):
        read_archive(home, ["0123456789abcdef"])


def test_unknown_item_ids_need_the_batch_items_file(home: Home, write_csv) -> None:
    _first_batch(home, write_csv)
    frame = make_interactions(n_users=1, per_user=2)
    frame["timestamp"] += 20_000
    frame.loc[1, "item_id"] = "brand-new"
    batch_file = write_csv(frame, "batch3.csv")

    rejected = land_batch(home, batch_file)
    assert rejected.status == "quarantined"
    assert rejected.report is not None
    assert rejected.report.failures[0].expectation == "expect_column_values_to_be_in_set"
    assert rejected.report.failures[0].examples[0]["item_id"] == "brand-new"

    accepted = land_batch(home, batch_file, write_csv(make_items(["brand-new"]), "new-items.csv"))
    assert accepted.status == "archived", accepted.message
    assert "brand-new" in set(read_archive(home).items["item_id"])


def test_first_batch_without_items_is_quarantined(home: Home, write_csv) -> None:
    result = land_batch(home, write_csv(make_interactions(), "batch.csv"))
    assert result.status == "quarantined"
    assert "item_id must be in the catalogue" in result.message


def test_bad_items_file_quarantines_the_whole_batch(home: Home, write_csv) -> None:
    items = make_items(ITEM_IDS + ["i0"])  # i0 twice
    result = land_batch(home, write_csv(make_interactions(), "b.csv"), write_csv(items, "it.csv"))
    assert result.status == "quarantined"
    assert result.report is not None
    assert [f.file for f in result.report.failures] == ["it.csv"]
    assert archived_batches(home) == [] and _archive_listing(home) == []
    assert {p.name for p in (result.path / "received").iterdir()} == {"b.csv", "it.csv"}


def test_unreadable_files_are_quarantined_naming_the_file(home: Home, tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("user_id,item_id,timestamp\nJos\xe9,i1,1\n".encode("latin-1"))
    result = land_batch(home, latin1)
    assert result.status == "quarantined"
    reason = "latin1.csv: file must be readable (UnicodeDecodeError: 'utf-8' codec can't decode"
    assert reason in result.message
    assert result.message.endswith(f"(file_is_readable); report: {result.path}/report.md")
    assert (result.path / "received" / "latin1.csv").read_bytes() == latin1.read_bytes()

    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    result = land_batch(home, broken)
    assert result.status == "quarantined"
    assert result.report is not None and result.report.failures[0].file == "broken.parquet"
    assert result.rows == 0


def test_a_file_cut_off_or_with_missing_fields_is_quarantined_naming_the_row(
    home: Home, tmp_path: Path, write_csv
) -> None:
    _first_batch(home, write_csv)
    before = _archive_listing(home)
    whole = make_interactions().to_csv(index=False)
    assert whole.endswith("\n")
    # Cut inside the last row's timestamp: its rating field is missing and no line break ends it.
    cut = tmp_path / "cut.csv"
    cut.write_text(whole[: whole.rindex(",", 0, -1) - 4])
    result = land_batch(home, cut)
    assert result.status == "quarantined" and result.rejected
    last = len(make_interactions()) - 1
    assert f"cut.csv: row {last}: every row must have the header's 4 fields" in result.message
    rules = [f.expectation for f in result.report.failures]
    assert rules == ["rows_have_the_header_fields", "file_ends_with_a_line_break"]
    assert "line break" in (result.path / "report.md").read_text()
    assert (result.path / "received" / "cut.csv").read_bytes() == cut.read_bytes()

    # A row short of a field in the middle of a file is named too, the line break present.
    lines = whole.splitlines(keepends=True)
    lines[3] = "u0,i2\n"
    short = tmp_path / "short.csv"
    short.write_text("".join(lines))
    result = land_batch(home, short)
    assert result.status == "quarantined"
    assert result.message.startswith(f"batch {result.batch_id} quarantined: short.csv: row 2:")
    [failure] = result.report.failures
    assert failure.unexpected_count == 1 and failure.examples == [{"row": 2, "fields": 2}]

    # Cut at a field boundary: every row is whole, but the last line break is missing.
    unended = tmp_path / "unended.csv"
    unended.write_text(whole.rstrip("\n"))
    result = land_batch(home, unended)
    assert result.status == "quarantined"
    [failure] = result.report.failures
    assert (
        failure.expectation == "file_ends_with_a_line_break" and failure.examples[0]["row"] == last
    )
    assert _archive_listing(home) == before  # nothing of them reached the archive

    # Quoted fields may hold separators and line breaks; CRLF line ends are whole lines too.
    quoted = make_interactions()
    quoted["event"] = 'view, then "buy"\nlater'
    fine = tmp_path / "fine.csv"
    quoted.to_csv(fine, index=False, lineterminator="\r\n")
    assert land_batch(home, fine).status == "archived"


def test_the_first_reason_given_is_the_root_cause(home: Home, tmp_path: Path, write_csv) -> None:
    _first_batch(home, write_csv)
    # New items in a latin-1 items file: the file cannot be read, so its items are unknown too;
    # the one line names the decoding error, not the unknown items.
    batch = write_csv(make_interactions().assign(item_id="new1"), "batch.csv")
    items = tmp_path / "items.csv"
    items.write_bytes("item_id,title,text\nnew1,Caf\xe9,\n".encode("latin-1"))
    result = land_batch(home, batch, items)
    assert result.status == "quarantined"
    assert "items.csv: file must be readable (UnicodeDecodeError" in result.message
    rules = [f.rule for f in result.report.failures]
    assert rules[-1] == "item_id must be in the catalogue or in the batch's items file"


def test_nul_bytes_and_wordless_items_are_quarantined(
    home: Home, tmp_path: Path, write_csv
) -> None:
    _first_batch(home, write_csv)
    before = _archive_listing(home)
    nul = write_csv(make_interactions().assign(event="vi\x00ew"), "nul.csv")
    result = land_batch(home, nul)
    assert result.status == "quarantined"
    assert "nul.csv: row 0: event must be valid text (no NUL bytes" in result.message

    batch = write_csv(make_interactions().assign(item_id="new1"), "batch2.csv")
    items = write_csv(pd.DataFrame({"item_id": ["new1"], "title": [" "], "text": [""]}), "i.csv")
    result = land_batch(home, batch, items)
    assert result.status == "quarantined"
    assert "i.csv: row 0: an item must have a title or a text" in result.message
    assert _archive_listing(home) == before
    # Text alone (or a title alone) is enough.
    items = write_csv(pd.DataFrame({"item_id": ["new1"], "title": [""], "text": ["A"]}), "j.csv")
    assert land_batch(home, batch, items).status == "archived"


def test_a_symbolic_link_is_quarantined_without_reading_its_target(
    home: Home, tmp_path: Path, write_csv
) -> None:
    secret = write_csv(make_interactions(), "secret.csv")  # a valid table, and private
    link = tmp_path / "batch.csv"
    link.symlink_to(secret)
    result = land_batch(home, link)
    assert result.status == "quarantined" and result.rejected
    assert f"batch.csv: file must be a regular file, not a symbolic link (to {secret})" in (
        result.message
    )
    kept = result.path / "received" / "batch.csv"
    assert kept.is_symlink() and Path(kept.readlink()) == secret  # the link, as it arrived
    secret_bytes = secret.read_bytes()
    for stored in result.path.rglob("*"):
        if stored.is_file() and not stored.is_symlink():
            assert secret_bytes not in stored.read_bytes(), stored
    assert not home.archive.exists() or not any(home.archive.iterdir())
    # The same link again is the same (rejected) batch; a dangling link is refused the same way.
    assert land_batch(home, link).rejected
    dangling = tmp_path / "gone.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    assert land_batch(home, dangling).status == "quarantined"


def test_usage_errors_raise(home: Home, tmp_path: Path) -> None:
    with pytest.raises(LandingError, match="not found"):
        land_batch(home, tmp_path / "missing.csv")
    other = tmp_path / "batch.json"
    other.write_text("{}")
    with pytest.raises(LandingError, match="unsupported"):
        land_batch(home, other)
    assert not home.ledger.exists()


def test_crash_before_the_ledger_line_leaves_no_batch(
    home: Home, write_csv, monkeypatch: pytest.MonkeyPatch
) -> None:
    interactions_file = write_csv(make_interactions(), "batch1.csv")
    items_file = write_csv(make_items(ITEM_IDS), "items1.csv")

    def crash(*args, **kwargs):
        raise OSError("disk full")

    # A crash while writing the archive folder: nothing published, nothing left behind.
    with monkeypatch.context() as patch:
        patch.setattr(landing, "_write_archive", crash)
        with pytest.raises(OSError, match="disk full"):
            land_batch(home, interactions_file, items_file)
    assert archived_batches(home) == [] and _archive_listing(home) == []
    assert not list(home.root.glob(".landing-*"))

    # A crash after the folder is in place but before the ledger line: not landed either.
    with monkeypatch.context() as patch:
        patch.setattr(landing, "_append_ledger", crash)
        with pytest.raises(OSError, match="disk full"):
            land_batch(home, interactions_file, items_file)
    assert archived_batches(home) == []
    assert len(read_archive(home).interactions) == 0

    # Landing again completes it (the orphan folder is replaced), exactly once.
    result = land_batch(home, interactions_file, items_file)
    assert result.status == "archived"
    assert [r.batch_id for r in archived_batches(home)] == [result.batch_id]


def test_positions_as_timestamps_are_accepted(home: Home, write_csv) -> None:
    frame = make_interactions()
    frame["timestamp"] = range(len(frame))
    assert len(frame) < T0
    result = land_batch(home, write_csv(frame, "p.csv"), write_csv(make_items(ITEM_IDS), "i.csv"))
    assert result.status == "archived", result.message


def test_an_update_learns_the_events_its_champion_was_judged_on(home: Home, write_csv) -> None:
    from tasks.prepare import prepare_cycle

    first = _first_batch(home, write_csv)
    later = make_interactions(n_users=4, per_user=2)
    later["timestamp"] += 10_000  # after the first batch
    second = land_batch(home, write_csv(later, "batch2.csv"))
    assert second.status == "archived", second.message

    data = prepare_cycle(home, applied=[first.batch_id])
    assert data is not None and data.new_interactions is not None
    key = ["user_id", "item_id", "timestamp"]
    new = set(map(tuple, data.new_interactions[key].astype(str).to_numpy()))
    # The first batch's last event of each user: held out when the champion learned that batch
    # and was judged on it, so never trained on; the update learns them now.
    judged = make_interactions().sort_values("timestamp").groupby("user_id").tail(1)
    assert set(map(tuple, judged[key].astype(str).to_numpy())) <= new
    # The second batch's training rows are new too; its own last events are held out of it.
    held_out = later.sort_values("timestamp").groupby("user_id").tail(1)
    trained = later.drop(index=held_out.index)
    assert set(map(tuple, trained[key].astype(str).to_numpy())) <= new
    assert not set(map(tuple, held_out[key].astype(str).to_numpy())) & new
    assert len(new) == len(judged) + len(trained)
    # Every new event is one the update trains on (a row of its training interactions).
    train = set(map(tuple, data.train_interactions[key].astype(str).to_numpy()))
    assert new <= train
