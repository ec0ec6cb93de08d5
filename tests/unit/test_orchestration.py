"""The pieces of ``recloop serve`` / ``recloop watch`` that need no server: the batch-planning rule,
when a dropped file counts as written, the training lock, undeliverable announcements."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from recloop.config import load_config
from recloop.landing import LandingResult
from recloop.orchestration import (
    EVENT,
    LandingWatcher,
    announce_batch,
    batch_event,
    home_label,
    items_file_for,
    run_name,
    run_tags,
    training_lock,
)
from recloop.paths import get_home
from tasks.prepare import plan_batches

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


# -- plan_batches: one candidate per landed batch, in landing order ---------------------------


def test_plan_learns_up_to_the_first_undecided_batch() -> None:
    archived = ["a", "b", "c"]
    # Whichever of three runs takes the lock first, the first candidate learns batch a alone.
    for until in archived:
        plan = plan_batches(archived, trained=[], tried=[], until=until)
        assert (plan.batches, plan.decides) == (["a"], "a")


def test_plan_after_a_promotion_starts_from_the_champion() -> None:
    plan = plan_batches(["a", "b", "c"], trained=["a"], tried=[], until="c")
    assert (plan.batches, plan.decides) == (["b"], "b")


def test_plan_after_a_rejection_learns_the_rejected_batch_again_with_the_next() -> None:
    # A candidate of this champion was judged (and rejected) on a: still pending, but decided.
    plan = plan_batches(["a", "b", "c"], trained=[], tried=["a"], until="c")
    assert (plan.batches, plan.decides) == (["a", "b"], "b")


def test_plan_has_nothing_to_do_once_the_batch_is_decided() -> None:
    learned = plan_batches(["a", "b"], trained=["a", "b"], tried=[], until="b")
    assert learned.batches == [] and learned.decides is None
    assert "already learned" in learned.reason
    judged = plan_batches(["a", "b"], trained=[], tried=["a", "b"], until="a")
    assert judged.batches == [] and "already judged" in judged.reason
    # A later batch still undecided is left to the run started for it.
    assert plan_batches(["a", "b"], trained=[], tried=["a"], until="a").decides is None


def test_plan_rejects_a_batch_that_is_not_archived() -> None:
    with pytest.raises(LookupError, match="zzz"):
        plan_batches(["a"], trained=[], tried=[], until="zzz")


# -- the landing-folder watcher: naming and "completely written" ------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _landing(tmp_path: Path) -> tuple[LandingWatcher, FakeClock, Path]:
    home = get_home(tmp_path / "home").ensure()
    clock = FakeClock()
    return LandingWatcher(home, settle=2.0, announce=False, clock=clock), clock, home.landing


def test_a_file_is_ready_only_after_it_stopped_changing(tmp_path: Path) -> None:
    watcher, clock, landing = _landing(tmp_path)
    batch = landing / "b1.csv"
    batch.write_text("user_id,item_id,timestamp\n")
    assert watcher.ready() == []  # first seen now
    clock.now = 1.5
    with open(batch, "a") as handle:  # the writer is still appending
        handle.write("u1,i1,1700000000\n")
    os.utime(batch, ns=(time.time_ns(), time.time_ns() + 1_000_000))
    assert watcher.ready() == []
    clock.now = 3.0  # 1.5 s unchanged: not yet
    assert watcher.ready() == []
    clock.now = 3.6
    assert watcher.ready() == [(batch, None)]


def test_items_file_naming_and_ignored_names(tmp_path: Path) -> None:
    watcher, clock, landing = _landing(tmp_path)
    for name in ("b1.parquet", "b1.items.csv", "lonely.items.csv", ".b2.csv", "b3.csv.part"):
        (landing / name).write_text("x")
    (landing / "notes.txt").write_text("x")
    watcher.ready()
    clock.now = 5.0
    # Items files and names that are hidden, partial or of other types are never batches.
    assert watcher.ready() == [(landing / "b1.parquet", landing / "b1.items.csv")]


def test_a_batch_waits_for_its_items_file_to_settle(tmp_path: Path) -> None:
    watcher, clock, landing = _landing(tmp_path)
    (landing / "b1.csv").write_text("x")
    watcher.ready()
    clock.now = 5.0
    (landing / "b1.items.csv").write_text("x")
    assert watcher.ready() == []  # the items file has only just appeared
    clock.now = 7.5
    assert watcher.ready() == [(landing / "b1.csv", landing / "b1.items.csv")]


def test_two_items_files_for_one_batch_are_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than one items file"):
        items_file_for(tmp_path / "b.csv", {"b.items.csv", "b.items.parquet"})
    assert items_file_for(tmp_path / "b.csv", {"b.items.tsv"}) == tmp_path / "b.items.tsv"
    watcher, clock, landing = _landing(tmp_path)
    for name in ("b.csv", "b.items.csv", "b.items.parquet"):
        (landing / name).write_text("x")
    watcher.ready()
    clock.now = 5.0
    assert watcher.ready() == []  # left alone until one of them is removed


# -- the training lock -------------------------------------------------------------------------


def test_training_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    home = get_home(tmp_path / "home")
    spans: list[tuple[str, float, float]] = []

    def hold(name: str) -> None:
        with training_lock(home, name):
            started = time.monotonic()
            time.sleep(0.3)
            spans.append((name, started, time.monotonic()))

    threads = [threading.Thread(target=hold, args=(f"t{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(spans) == 3
    spans.sort(key=lambda span: span[1])
    for (_, _, end), (_, start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start  # no two holders overlap


# -- announcements that cannot be delivered ---------------------------------------------------


def _archived(tmp_path: Path) -> tuple[object, LandingResult]:
    home = get_home(tmp_path / "home").ensure()
    result = LandingResult("0123456789abcdef", "archived", home.archive, None, 3, "archived")
    return home, result


def test_the_event_names_the_batch_and_its_home(tmp_path: Path) -> None:
    home, result = _archived(tmp_path)
    event = batch_event(home, result)
    assert event["event"] == EVENT == "recloop.batch.landed"
    assert event["resource"]["prefect.resource.id"] == "recloop.batch.0123456789abcdef"
    assert event["payload"]["batch_id"] == "0123456789abcdef"
    assert event["payload"]["home"] == str(home.root)


def test_announce_without_a_server_url_says_so(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home, result = _archived(tmp_path)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        out = announce_batch(home, result)
    assert not out.delivered
    assert "PREFECT_API_URL is not set" in out.message and "pending" in out.message
    assert len(out.message.splitlines()) == 1


def test_announce_to_a_server_that_is_down_says_so_quickly(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    home, result = _archived(tmp_path)
    started = time.monotonic()
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        out = announce_batch(home, result, timeout=10)
    assert time.monotonic() - started < 10
    assert not out.delivered
    assert f"127.0.0.1:{port}" in out.message and "pending" in out.message
    assert len(out.message.splitlines()) == 1


# -- deployments/prefect.yaml and the config agree ----------------------------------------------


def test_prefect_yaml_schedules_match_the_default_config() -> None:
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    crons = {
        (d["entrypoint"].split(":")[-1], d["name"]): [s["cron"] for s in d.get("schedules", [])]
        for d in spec["deployments"]
    }
    orchestration = load_config().orchestration
    assert crons[("feedback_loop", "scheduled")] == [orchestration.feedback_cron]
    assert crons[("pretrain_encoder", "scheduled")] == [orchestration.pretrain_cron]


# -- flow-run names and tags ------------------------------------------------------------------


def test_names_and_tags_spell_out_home_batches_and_outcome(tmp_path: Path) -> None:
    assert home_label(get_home(tmp_path / "shop")) == "shop"
    assert home_label(get_home(tmp_path / "shop" / ".recloop")) == "shop/.recloop"
    assert run_name("incremental", ["ac1eb9e2b1ac1639"]) == "incremental · batch ac1eb9e2"
    assert run_name("full-retrain", 3, "v5 promoted") == "full-retrain · 3 batches · v5 promoted"
    assert run_name("incremental", 1) == "incremental · 1 batch"
    assert run_name("incremental") == "incremental · pending batches"
    assert run_tags(get_home(tmp_path / "shop"), "incremental", ["ac1eb9e2b1ac1639"], "4") == [
        "recloop",
        "home:shop",
        "training:incremental",
        "batch:ac1eb9e2",
        "version:4",
    ]
