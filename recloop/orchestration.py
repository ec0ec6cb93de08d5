"""How recloop runs unattended: the training lock, batch announcements, the landing-folder
watcher.

- **Training lock.** One cycle at a time per ``RECLOOP_HOME``: every flow that trains, evaluates
  or promotes (``feedback-loop``, ``full-retrain``, ``pretrain-encoder``) holds an exclusive
  ``flock`` on ``RECLOOP_HOME/.training.lock`` from reading the champion to moving the aliases,
  whatever started it (``recloop serve``, a Prefect worker, ``recloop run``): the archive and the
  registry it guards are shared by all of them.
- **Announcements.** After a batch is archived, the event ``recloop.batch.landed`` (resource
  ``recloop.batch.<batch_id>``, payload ``batch_id`` and ``home``) goes to the Prefect server at
  ``PREFECT_API_URL``. An event that cannot be delivered is reported in one line; the batch stays
  archived and pending, and the next scheduled ``feedback-loop`` run learns it.
- **Watcher.** Files dropped into ``RECLOOP_HOME/landing/`` are landed through the same code path
  as ``recloop ingest`` (see :class:`LandingWatcher` for the naming convention).
- **Run names and tags.** Every flow run says what it is: named ``<training> · batch <id>`` (or
  ``· N batches``), with the outcome once known (``· v4 promoted``), and tagged ``recloop``,
  ``home:<folder>``, ``training:<kind>``, ``batch:<id>`` and ``version:<n>``, so the Prefect UI
  can filter one home's runs, one batch's run or one kind of training.

Serving the deployments (``recloop serve``) lives with the flows, in ``flows.serve``.

Heavy imports (prefect, great expectations) happen inside the functions.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recloop.paths import Home

if TYPE_CHECKING:
    from recloop.landing import LandingResult

logger = logging.getLogger(__name__)

EVENT = "recloop.batch.landed"
RESOURCE_PREFIX = "recloop.batch."
HOME_LABEL = "recloop.home"  # resource label: the home a batch landed in
LOCK_FILE = ".training.lock"
ITEMS_MARK = ".items"  # landing/NAME.items.csv accompanies landing/NAME.csv
CLAIMED = ".claimed"  # landing/.claimed/<claim>/: files taken by the watcher, being landed
WATCH_INTERVAL = 2.0  # seconds between two looks at the landing folder
WATCH_SETTLE = 2.0  # seconds a dropped file must stay unchanged before it counts as written
ANNOUNCE_TIMEOUT = 10.0  # seconds to deliver the recloop.batch.landed event


# --------------------------------------------------------------------------------------------
# The training lock


@contextmanager
def training_lock(home: Home, what: str = "a cycle") -> Iterator[None]:
    """Hold the home's training lock: one fine-tune / pretraining / promotion at a time.

    Blocks until the lock is free (logging that it waits). The kernel drops a ``flock`` when its
    process dies, so a crashed run never leaves the home locked.
    """
    home.root.mkdir(parents=True, exist_ok=True)
    path = home.root / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            logger.info(
                "%s waits for the training lock of %s (held by %s)", what, home.root, holder
            )
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            logger.info("%s got the training lock after %.1f s", what, time.monotonic() - started)
        try:
            # Who holds it, for the message of the next one to wait (diagnostics only).
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}: {what}\n")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Flow-run names and tags

TAG = "recloop"  # every flow run recloop starts carries it
BATCH_PREFIX = 8  # hex digits of a batch id shown in run names and tags (ids have 16)


def home_label(home: Home) -> str:
    """The home's folder name, with its parent's when it is hidden (``shop/.recloop``)."""
    root = home.root.resolve()
    return f"{root.parent.name}/{root.name}" if root.name.startswith(".") else root.name


def run_tags(
    home: Home | None,
    training: str,
    batches: list[str] | tuple[str, ...] = (),
    version: str | None = None,
) -> list[str]:
    """``recloop``, ``home:<folder>``, ``training:<kind>``, then ``batch:<id>`` per batch and
    ``version:<n>`` once a version is registered."""
    tags = [TAG] + ([f"home:{home_label(home)}"] if home is not None else [])
    tags.append(f"training:{training}")
    tags += [f"batch:{batch[:BATCH_PREFIX]}" for batch in batches]
    if version:
        tags.append(f"version:{version}")
    return tags


def run_name(training: str, batches: list[str] | int | None = None, outcome: str = "") -> str:
    """``incremental · batch ac1eb9e2``, ``full-retrain · 3 batches``, with `` · <outcome>``.

    ``batches``: the batch ids, or how many there are; None when not known yet."""
    if batches is None:
        what = "pending batches"
    elif not batches:
        what = "no new batch"
    elif isinstance(batches, int):
        what = f"{batches} batch" + ("" if batches == 1 else "es")
    elif len(batches) == 1:
        what = f"batch {batches[0][:BATCH_PREFIX]}"
    else:
        what = f"{len(batches)} batches"
    return f"{training} · {what}" + (f" · {outcome}" if outcome else "")


def outcome_of(summary: dict[str, Any]) -> str:
    """A cycle's outcome for a run name: ``v4 promoted``, ``v4 not promoted``, ``up to date``."""
    version = summary.get("version")
    if version:
        return f"v{version} " + ("promoted" if summary.get("promoted") else "not promoted")
    return str(summary.get("status", "")).replace("-", " ")


def label_flow_run(name: str | None = None, tags: list[str] | tuple[str, ...] = ()) -> None:
    """Rename the current flow run and add ``tags`` to those it has; nothing outside a flow run.

    A run's batches are known only once it has landed or planned them, after Prefect named it,
    so the flows call this as they learn more. Labels are for people: a failure is logged, never
    raised.
    """
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    run = context.flow_run
    merged = list(dict.fromkeys([*(run.tags or []), *tags]))
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run.id, name=name, tags=merged)
    except Exception as error:  # the run goes on under its earlier name and tags
        logger.warning("could not label flow run %s: %s", run.name, error)
        return
    run.tags = merged
    if name:
        run.name = name


# --------------------------------------------------------------------------------------------
# Announcing a landed batch


@dataclass(frozen=True)
class Announcement:
    """Whether the ``recloop.batch.landed`` event reached the Prefect server, in one line."""

    delivered: bool
    message: str


def batch_event(home: Home, result: LandingResult) -> dict[str, Any]:
    """The event's fields: name, resource (id, file name, home) and payload."""
    return {
        "event": EVENT,
        "resource": {
            "prefect.resource.id": f"{RESOURCE_PREFIX}{result.batch_id}",
            "prefect.resource.name": (
                result.record.files.get("interactions", result.batch_id)
                if result.record is not None
                else result.batch_id
            ),
            HOME_LABEL: str(home.root),
        },
        "payload": {
            "batch_id": result.batch_id,
            "home": str(home.root),
            "rows": result.rows,
            "item_rows": result.item_rows,
        },
    }


async def _send(fields: dict[str, Any]) -> None:
    from prefect.events.clients import get_events_client
    from prefect.events.schemas.events import Event

    # Unlike emit_event (a background worker that drops what it cannot send), this client raises
    # when the server cannot be reached, and leaving the context closes the websocket only after
    # the event frame went out.
    async with get_events_client(reconnection_attempts=2) as client:
        await client.emit(Event(**fields))


def announce_batch(home: Home, result: LandingResult, timeout: float = 10.0) -> Announcement:
    """Send ``recloop.batch.landed`` for an archived batch to the server at ``PREFECT_API_URL``."""
    from prefect.settings import get_current_settings

    later = "it stays pending for the next feedback-loop run (scheduled, or recloop update)"
    url = get_current_settings().api.url
    if not url:
        # Without a server URL Prefect would emit into a temporary server nobody listens to.
        return Announcement(
            False, f"batch {result.batch_id} not announced (PREFECT_API_URL is not set); {later}"
        )
    events_logger = logging.getLogger("prefect.events.clients")
    level = events_logger.level
    events_logger.setLevel(logging.CRITICAL)  # the one line below says it all
    try:
        asyncio.run(asyncio.wait_for(_send(batch_event(home, result)), timeout))
    except Exception as error:  # any failure to deliver is reported, never raised
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return Announcement(
            False,
            f"batch {result.batch_id} not announced (cannot reach the Prefect server at {url}: "
            f"{reason}); {later}",
        )
    finally:
        events_logger.setLevel(level)
    return Announcement(True, f"announced {EVENT} for batch {result.batch_id} to {url}")


@dataclass(frozen=True)
class IngestOutcome:
    """A landing and, for an archived batch, its announcement."""

    result: LandingResult
    announcement: Announcement | None  # None: not archived now (quarantined or a duplicate)


def ingest_batch(
    home: Home,
    interactions_file: Path,
    items_file: Path | None = None,
    *,
    announce: bool = True,
    timeout: float = 10.0,
) -> IngestOutcome:
    """Land one batch (validate, archive or quarantine), then announce it if it was archived.

    The one code path of ``recloop ingest`` and the watcher. A duplicate is not announced again:
    it is archived already, so it was announced (or is pending for the scheduled run).
    """
    from recloop.landing import ARCHIVED, land_batch

    result = land_batch(home, interactions_file, items_file)
    announcement = None
    if announce and result.status == ARCHIVED:
        announcement = announce_batch(home, result, timeout)  # the caller reports it
    return IngestOutcome(result, announcement)


# --------------------------------------------------------------------------------------------
# The landing-folder watcher


def _supported(path: Path) -> bool:
    from recloop.landing import SUPPORTED_SUFFIXES

    return path.suffix in SUPPORTED_SUFFIXES and not path.name.startswith(".")


def is_items_file(path: Path) -> bool:
    """``NAME.items.<ext>``: the items file of the batch ``NAME.<ext>``, never a batch itself."""
    return path.stem.endswith(ITEMS_MARK)


def items_file_for(batch: Path, names: set[str]) -> Path | None:
    """The items file accompanying ``batch`` among ``names`` (``NAME.items.<any ext>``).

    Raises :class:`ValueError` when more than one matches: which one is meant is unclear.
    """
    from recloop.landing import SUPPORTED_SUFFIXES

    found = [f"{batch.stem}{ITEMS_MARK}{ext}" for ext in SUPPORTED_SUFFIXES]
    found = [name for name in found if name in names]
    if len(found) > 1:
        raise ValueError(f"{batch.name}: more than one items file ({', '.join(found)})")
    return batch.with_name(found[0]) if found else None


def _log_outcome(outcome: IngestOutcome) -> None:
    """The watcher's default report: the landing and its announcement, as log lines."""
    logger.info("landing: %s", outcome.result.message)
    if outcome.announcement is not None:
        log = logger.info if outcome.announcement.delivered else logger.warning
        log("landing: %s", outcome.announcement.message)


@dataclass
class _Seen:
    signature: tuple[int, int]  # (size, mtime in ns)
    since: float  # when this signature was first seen (monotonic seconds)


class LandingWatcher:
    """Land the batches dropped into ``RECLOOP_HOME/landing/``.

    Naming: a batch is one interactions file ``NAME.csv`` / ``.tsv`` / ``.parquet``; its optional
    items file is ``NAME.items.csv`` / ``.tsv`` / ``.parquet`` beside it (drop it first, or both
    together). Names starting with ``.`` and other suffixes (``.part``, ``.tmp``) are ignored, so
    a writer may write ``.NAME.csv`` or ``NAME.csv.part`` and rename it into place.

    A file counts as completely written once its size and modification time have not changed for
    ``settle`` seconds (both files of a batch). The watcher then claims the files by renaming
    them into ``landing/.claimed/<claim>/`` (so a writer reusing the name cannot be mixed in),
    lands them through :func:`ingest_batch` (validate, archive or quarantine with a report,
    announce), and deletes the claimed copies only after that returned: by then the archive or
    the quarantine holds the bytes exactly as received. A claim whose landing failed stays in
    ``.claimed/`` and is retried once at the watcher's next start.
    """

    def __init__(
        self,
        home: Home,
        settle: float = 2.0,
        *,
        announce: bool = True,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        report: Callable[[IngestOutcome], None] | None = None,
    ) -> None:
        self.home = home
        self.report = report or _log_outcome
        self.settle = settle
        self.announce = announce
        self.timeout = timeout
        self.clock = clock
        self._seen: dict[Path, _Seen] = {}
        self._ambiguous: set[Path] = set()
        self._retried_claims = False

    @property
    def claimed(self) -> Path:
        return self.home.landing / CLAIMED

    def ready(self) -> list[tuple[Path, Path | None]]:
        """Batches whose files have settled, oldest first: ``(interactions, items or None)``."""
        now = self.clock()
        current: dict[Path, _Seen] = {}
        if self.home.landing.is_dir():
            for path in self.home.landing.iterdir():
                if not _supported(path) or not path.is_file():
                    continue
                try:
                    stat = path.stat()
                except FileNotFoundError:  # renamed away between listing and stat
                    continue
                signature = (stat.st_size, stat.st_mtime_ns)
                seen = self._seen.get(path)
                current[path] = (
                    seen if seen and seen.signature == signature else _Seen(signature, now)
                )
        self._seen = current
        names = {path.name for path in current}
        settled = {path for path, seen in current.items() if now - seen.since >= self.settle}
        batches = []
        for path in current:
            if is_items_file(path):
                continue
            try:
                items = items_file_for(path, names)
            except ValueError as error:
                if path not in self._ambiguous:  # said once, not at every look
                    logger.error("landing: %s; waiting until only one is left", error)
                    self._ambiguous.add(path)
                continue
            self._ambiguous.discard(path)
            if path in settled and (items is None or items in settled):
                batches.append((path, items))
        batches.sort(key=lambda pair: (current[pair[0]].signature[1], pair[0].name))
        return batches

    def _claim(self, interactions: Path, items: Path | None) -> Path:
        folder = (
            self.claimed / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns()}"
        )
        folder.mkdir(parents=True)
        moved: list[Path] = []
        try:
            for path in (items, interactions):  # interactions last: it is what marks a batch
                if path is not None:
                    os.rename(path, folder / path.name)  # atomic: same file system
                    moved.append(path)
        except FileNotFoundError:  # one was taken away meanwhile: put the other one back
            for path in moved:
                os.rename(folder / path.name, path)
            folder.rmdir()
            raise
        return folder

    def _land_claim(self, folder: Path) -> IngestOutcome | None:
        files = sorted(p for p in folder.iterdir() if _supported(p))
        batch = [p for p in files if not is_items_file(p)]
        if len(batch) != 1:
            logger.error("landing: %s holds no single batch file; left as it is", folder)
            return None
        items = items_file_for(batch[0], {p.name for p in files})
        try:
            outcome = ingest_batch(
                self.home, batch[0], items, announce=self.announce, timeout=self.timeout
            )
        except Exception:
            logger.exception("landing: %s failed; its files stay in %s", batch[0].name, folder)
            return None
        # Archived, quarantined or a duplicate of a stored batch: the bytes are kept there.
        shutil.rmtree(folder)
        self.report(outcome)
        return outcome

    def poll(self) -> list[IngestOutcome]:
        """One look at the landing folder: land every batch that has settled."""
        outcomes = []
        if not self._retried_claims:
            self._retried_claims = True
            if self.claimed.is_dir():
                for folder in sorted(self.claimed.iterdir()):
                    if folder.is_dir() and (outcome := self._land_claim(folder)) is not None:
                        outcomes.append(outcome)
        for interactions, items in self.ready():
            try:
                folder = self._claim(interactions, items)
            except FileNotFoundError:  # taken or removed meanwhile; seen again if it comes back
                continue
            self._seen.pop(interactions, None)
            if items is not None:
                self._seen.pop(items, None)
            if (outcome := self._land_claim(folder)) is not None:
                outcomes.append(outcome)
        return outcomes

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set."""
        logger.info(
            "watching %s (a file lands after %.1f s unchanged)", self.home.landing, self.settle
        )
        while not stop.is_set():
            try:
                self.poll()
            except Exception:  # the watcher outlives one bad look (e.g. a vanished folder)
                logger.exception("landing: poll failed")
            stop.wait(interval)

    def drain(self) -> list[IngestOutcome]:
        """Land what is in the folder now: look, wait until the files settle, look again."""
        outcomes = self.poll()
        if self._seen:
            time.sleep(self.settle)
            outcomes += self.poll()
        return outcomes


def make_watcher(
    home: Home, report: Callable[[IngestOutcome], None] | None = None
) -> LandingWatcher:
    """A watcher with the default settle time (:data:`WATCH_SETTLE`) and announcement timeout."""
    return LandingWatcher(home, WATCH_SETTLE, timeout=ANNOUNCE_TIMEOUT, report=report)


def watch(
    home: Home,
    *,
    once: bool = False,
    report: Callable[[IngestOutcome], None] | None = None,
) -> list[IngestOutcome]:
    """``recloop watch``: land dropped batches until interrupted (or what is there, ``once``).

    ``report`` is called with each landing as it happens (default: log lines)."""
    watcher = make_watcher(home.ensure(), report)
    if once:
        return watcher.drain()
    stop = threading.Event()
    try:
        watcher.run(stop, WATCH_INTERVAL)
    except KeyboardInterrupt:
        stop.set()
    return []
