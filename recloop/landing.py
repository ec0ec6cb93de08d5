"""Landing arriving batches: validate, then archive or quarantine, never half of either.

A batch is one interactions file and optionally an items file (docs/interfaces.md). Its id is the
first 16 hex digits of the SHA-256 of the files' bytes (interactions, then items), so the same
files always make the same batch and landing them twice is recognised.

- valid → ``archive/<batch_id>/``: ``interactions.parquet``, ``items.parquet`` (if any) in the
  canonical form, ``manifest.json``, and the files as received under ``received/``;
- invalid or unreadable → ``quarantine/<batch_id>/``: the files as received (byte copies),
  ``report.json`` and ``report.md``; nothing of it reaches the archive. A batch whose items file
  fails is quarantined whole.
- already archived or quarantined → ``duplicate``; nothing changes.

Atomicity: the batch folder is built in a temporary folder inside ``RECLOOP_HOME`` and renamed into
place, and the ledger line (``home.ledger``, JSON lines) is appended last. The ledger is the record:
a folder without its ledger line (a crash between the two steps) is not a landed batch and is
replaced when the batch lands again. A lock file serialises concurrent landings.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from recloop import faults
from recloop.data import (
    ITEM_COLUMNS,
    Dataset,
    normalise_interactions,
    normalise_items,
    read_table,
)
from recloop.paths import Home
from recloop.validation import (
    NOT_A_LINK,
    Failure,
    ValidationReport,
    csv_shape_report,
    read_error_report,
    validate_batch,
    validate_items,
)

logger = logging.getLogger(__name__)

ARCHIVED = "archived"
QUARANTINED = "quarantined"
DUPLICATE = "duplicate"
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".parquet")
RECEIVED = "received"  # subfolder holding the files exactly as they arrived


class LandingError(ValueError):
    """A usage error: a file is missing or of a type recloop does not read. Nothing was landed."""


@dataclass(frozen=True)
class BatchRecord:
    """One ledger line: a batch that was archived or quarantined."""

    seq: int  # 1-based landing order
    batch_id: str
    status: str  # "archived" | "quarantined"
    files: dict[str, str]  # role ("interactions", "items") -> file name as received
    rows: dict[str, int]  # role -> rows read (0 when the file could not be read)
    landed_at: str  # ISO 8601, UTC

    def path(self, home: Home) -> Path:
        """The batch's folder under the archive or the quarantine."""
        root = home.archive if self.status == ARCHIVED else home.quarantine
        return root / self.batch_id


@dataclass
class LandingResult:
    """What :func:`land_batch` did with one batch."""

    batch_id: str
    status: str  # "archived" | "quarantined" | "duplicate"
    path: Path  # the batch's folder (for a duplicate: where the earlier copy is)
    report: ValidationReport | None  # None for a duplicate (nothing was validated)
    rows: int  # interaction rows in the batch (0 if unreadable or a duplicate)
    message: str  # one line for people: what happened and why
    item_rows: int = 0
    record: BatchRecord | None = field(default=None, repr=False)

    @property
    def rejected(self) -> bool:
        """Quarantined now, or landed again after it was quarantined: not accepted either way."""
        if self.status == DUPLICATE:
            return self.record is not None and self.record.status == QUARANTINED
        return self.status == QUARANTINED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "batch_id": self.batch_id,
            "status": self.status,
            "rejected": self.rejected,
            "path": str(self.path),
            "rows": self.rows,
            "item_rows": self.item_rows,
            "message": self.message,
            "report": self.report.to_dict() if self.report is not None else None,
        }


def batch_id_of(interactions_file: Path, items_file: Path | None = None) -> str:
    """First 16 hex digits of SHA-256 over the files' bytes (interactions, then items)."""
    digest = hashlib.sha256()
    for path in (interactions_file, items_file):
        if path is None:
            continue
        if Path(path).is_symlink():  # never read through a link (see land_batch)
            digest.update(b"symlink:" + os.fsencode(os.readlink(path)))
            continue
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The ledger


def _read_ledger(home: Home) -> list[BatchRecord]:
    if not home.ledger.exists():
        return []
    records = []
    with open(home.ledger, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(BatchRecord(**json.loads(line)))
            except (json.JSONDecodeError, TypeError) as error:
                # A torn last line (crash while appending) means that batch did not land.
                logger.warning(
                    "%s:%d: ignoring unreadable ledger line (%s)", home.ledger, number, error
                )
    return records


def _append_ledger(home: Home, record: BatchRecord) -> None:
    line = json.dumps(asdict(record), sort_keys=True) + "\n"
    with open(home.ledger, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


@contextmanager
def _locked(home: Home) -> Iterator[None]:
    """One landing at a time per home (the watcher and ``recloop ingest`` may race)."""
    with open(home.root / ".landing.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def archived_batches(home: Home) -> list[BatchRecord]:
    """The archived batches, in landing order."""
    return [r for r in _read_ledger(home) if r.status == ARCHIVED]


def quarantined_batches(home: Home) -> list[BatchRecord]:
    """The quarantined batches, in landing order."""
    return [r for r in _read_ledger(home) if r.status == QUARANTINED]


def pending_batches(home: Home, applied: set[str]) -> list[BatchRecord]:
    """Archived batches not in ``applied`` (e.g. not yet trained on), in landing order."""
    return [r for r in archived_batches(home) if r.batch_id not in applied]


# --------------------------------------------------------------------------------------------
# Reading the archive


def _empty_dataset() -> Dataset:
    items = pd.DataFrame({c: pd.Series(dtype=str) for c in ITEM_COLUMNS})
    interactions = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "item_id": pd.Series(dtype=str),
            "timestamp": pd.Series(dtype="int64"),
        }
    )
    return Dataset(items, interactions)


def read_archive(home: Home, batch_ids: list[str] | None = None) -> Dataset:
    """The archived batches (all, or those in ``batch_ids``) as one dataset.

    Interactions are concatenated in landing order; items are the union, a later batch's row
    replacing an earlier row of the same ``item_id``. Unknown ids raise :class:`LandingError`.
    """
    records = archived_batches(home)
    if batch_ids is not None:
        wanted = set(batch_ids)
        unknown = wanted - {r.batch_id for r in records}
        if unknown:
            raise LandingError(f"not archived: {', '.join(sorted(unknown))}")
        records = [r for r in records if r.batch_id in wanted]
    if not records:
        return _empty_dataset()
    item_parts, interaction_parts = [], []
    for record in records:
        folder = home.archive / record.batch_id
        interaction_parts.append(pd.read_parquet(folder / "interactions.parquet"))
        if (folder / "items.parquet").exists():
            item_parts.append(pd.read_parquet(folder / "items.parquet"))
    interactions = normalise_interactions(pd.concat(interaction_parts, ignore_index=True))
    if not item_parts:
        return Dataset(_empty_dataset().items, interactions)
    items = pd.concat(item_parts, ignore_index=True)
    items = items.drop_duplicates("item_id", keep="last")
    return Dataset(normalise_items(items), interactions)


def known_item_ids(home: Home) -> set[str]:
    """Item ids of every archived batch (the catalogue a new batch may refer to)."""
    ids: set[str] = set()
    for record in archived_batches(home):
        path = home.archive / record.batch_id / "items.parquet"
        if path.exists():
            ids.update(pd.read_parquet(path, columns=["item_id"])["item_id"].astype(str))
    return ids


# --------------------------------------------------------------------------------------------
# Landing


def _check_file(path: Path | None, role: str) -> Path | None:
    if path is None:
        return None
    path = Path(path)
    if not path.is_file() and not path.is_symlink():
        raise LandingError(f"{path}: {role} file not found")
    if path.suffix not in SUPPORTED_SUFFIXES:
        raise LandingError(
            f"{path}: unsupported {role} file type {path.suffix!r} "
            f"(use {', '.join(SUPPORTED_SUFFIXES)})"
        )
    return path


def _link_report(path: Path | None) -> ValidationReport | None:
    """The failed report of a file that is a symbolic link (None for no file)."""
    if path is None:
        return None
    rule = f"file must be a regular file, not a symbolic link (to {os.readlink(path)})"
    return ValidationReport(
        success=False, failures=[Failure(path.name, NOT_A_LINK, None, rule)], files=[path.name]
    )


def _read(path: Path) -> tuple[pd.DataFrame | None, ValidationReport | None]:
    """The table, or the report saying why it could not be read (a CSV not a whole table too)."""
    try:
        shape = csv_shape_report(path) if path.suffix in {".csv", ".tsv"} else None
        if shape is not None:
            logger.info("%s: not a whole table: %s", path.name, shape.one_line())
            return None, shape
        return read_table(path), None
    except Exception as error:  # any parse failure is a property of the file, not a bug
        logger.info("%s: unreadable: %s", path.name, error)
        return None, read_error_report(path.name, error)


def _received_names(files: dict[str, Path]) -> dict[str, str]:
    """Names to store the received files under (prefixed by role when two names collide)."""
    names = [p.name for p in files.values()]
    return {
        role: (path.name if names.count(path.name) == 1 else f"{role}-{path.name}")
        for role, path in files.items()
    }


def _build_folder(staging: Path, files: dict[str, Path], extra: dict[str, bytes]) -> None:
    received = staging / RECEIVED
    received.mkdir()
    for role, name in _received_names(files).items():
        if files[role].is_symlink():  # kept as the link it is, never followed
            os.symlink(os.readlink(files[role]), received / name)
        else:
            shutil.copyfile(files[role], received / name)  # bytes exactly as they arrived
    for name, content in extra.items():
        (staging / name).write_bytes(content)


def _write_archive(
    staging: Path,
    files: dict[str, Path],
    record: BatchRecord,
    report: ValidationReport,
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
) -> None:
    """The archive folder: canonical Parquet tables, the received files and a manifest."""
    normalise_interactions(interactions).to_parquet(staging / "interactions.parquet", index=False)
    if items is not None:
        normalise_items(items).to_parquet(staging / "items.parquet", index=False)
    received = _received_names(files)
    manifest = {
        **asdict(record),
        "received": {role: f"{RECEIVED}/{name}" for role, name in received.items()},
        "sha256": {role: _sha256(path) for role, path in files.items()},
        "validation": {"success": report.success, "rules_checked": report.rules_checked},
    }
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    _build_folder(staging, files, {"manifest.json": manifest_text.encode("utf-8")})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _publish(home: Home, staging: Path, target: Path) -> None:
    """Move a finished batch folder into place (replacing an orphan left by a crash)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        logger.warning("%s: replacing a folder with no ledger line (an earlier crash)", target)
        shutil.rmtree(target)
    os.rename(staging, target)


def _validate_files(
    home: Home, interactions_path: Path, items_path: Path | None
) -> tuple[pd.DataFrame | None, pd.DataFrame | None, ValidationReport]:
    """Read and validate a batch's files: the tables (None where unreadable) and one report."""
    links = [path for path in (interactions_path, items_path) if path and path.is_symlink()]
    if links:
        # A link may point anywhere (a landing folder others can write to, a secret, a device):
        # its target is neither read nor copied; the link itself is kept.
        reports = [_link_report(path) for path in links]
        return None, None, ValidationReport.combine([r for r in reports if r is not None])
    interactions, interactions_error = _read(interactions_path)
    items, items_error = _read(items_path) if items_path is not None else (None, None)
    # A file that could not be read comes first: what else fails may follow from it (an
    # unreadable items file leaves the batch's new items unknown).
    reports = [r for r in (interactions_error, items_error) if r is not None]
    if interactions is not None:
        reports.append(
            validate_batch(
                interactions,
                items,
                known_item_ids(home),
                interactions_name=interactions_path.name,
                items_name=items_path.name if items_path is not None else None,
            ),
        )
    elif items is not None and items_path is not None:
        # Still check the items file so that the report lists everything wrong at once.
        reports.append(validate_items(items, name=items_path.name))
    return interactions, items, ValidationReport.combine(reports)


def land_batch(
    home: Home, interactions_file: Path, items_file: Path | None = None
) -> LandingResult:
    """Validate one batch, then archive it, quarantine it, or recognise it as a duplicate.

    Raises :class:`LandingError` when a file is missing or not CSV/TSV/Parquet (nothing stored).
    A file that exists but cannot be parsed is quarantined with a report naming the error.
    """
    interactions_path = _check_file(interactions_file, "interactions")
    items_path = _check_file(items_file, "items")
    assert interactions_path is not None
    home.ensure()
    batch_id = batch_id_of(interactions_path, items_path)
    files = {"interactions": interactions_path}
    if items_path is not None:
        files["items"] = items_path

    with _locked(home):
        for record in _read_ledger(home):
            if record.batch_id == batch_id:
                where = record.path(home)
                message = f"batch {batch_id} was already {record.status} (#{record.seq}): {where}"
                if record.status == QUARANTINED:
                    message += f"; report: {where}/report.md (fix the file and land it again)"
                logger.info(message)
                return LandingResult(batch_id, DUPLICATE, where, None, 0, message, record=record)

        interactions, items, report = _validate_files(home, interactions_path, items_path)
        rows = {
            "interactions": len(interactions) if interactions is not None else 0,
            **({"items": len(items) if items is not None else 0} if items_path else {}),
        }
        status = ARCHIVED if report.success else QUARANTINED
        landed_at = datetime.now(UTC).isoformat(timespec="seconds")
        record = BatchRecord(
            seq=len(_read_ledger(home)) + 1,
            batch_id=batch_id,
            status=status,
            files={role: path.name for role, path in files.items()},
            rows=rows,
            landed_at=landed_at,
        )
        target = record.path(home)
        staging = Path(tempfile.mkdtemp(prefix=f".landing-{batch_id}-", dir=home.root))
        try:
            if status == ARCHIVED:
                assert interactions is not None
                _write_archive(staging, files, record, report, interactions, items)
            else:
                report_json = json.dumps(report.to_dict(), indent=2, ensure_ascii=False)
                _build_folder(
                    staging,
                    files,
                    {
                        "report.json": (report_json + "\n").encode("utf-8", "replace"),
                        "report.md": report.to_markdown().encode("utf-8", "replace"),
                    },
                )
            _publish(home, staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        faults.point("landed")
        _append_ledger(home, record)

    if status == ARCHIVED:
        message = f"batch {batch_id} archived: {rows['interactions']} interactions"
        if items_path is not None:
            message += f", {rows['items']} items"
    else:
        message = f"batch {batch_id} quarantined: {report.one_line()}; report: {target}/report.md"
    logger.info(message)
    return LandingResult(
        batch_id,
        status,
        target,
        report,
        rows["interactions"],
        message,
        item_rows=rows.get("items", 0),
        record=record,
    )
