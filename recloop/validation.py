"""Validate an arriving batch against the Great Expectations suites in ``expectations/``.

The only module that imports ``great_expectations`` (lazily: the import takes seconds, and most
callers never validate). The suites are built in code here (:func:`build_suite`) and committed
as JSON (``python -m recloop.validation --write-suites``); validation always runs the committed
JSON, so a reviewed suite file is what guards the archive.

Run-time values. Two rules depend on the moment of landing:

- ``max_timestamp`` (now + 1 day in unix seconds; timestamps may also be positions, so 0 is the
  lower bound): the JSON holds ``{"$PARAMETER": "max_timestamp"}`` and
  :func:`validate_interactions` supplies the value through GX's ``expectation_parameters``.
- the catalogue (item ids of every archived batch plus those in this batch's items file): GX
  copies an expectation's ``value_set`` some 80 times per run (pydantic ``dict()``), so a 10,000
  item catalogue as a ``$PARAMETER`` value set costs ~5 s and a 60,000 item one ~30 s. Instead
  :func:`validate_interactions` adds the derived column ``item_id_is_known`` (pandas ``isin``,
  null where ``item_id`` is null) and the suite expects it to be in ``[true]``. Derived columns
  never appear in reports; the rule is reported against ``item_id`` (``meta.reports_column``).

Optional columns. An expectation whose ``meta`` has ``"when_column_present": COLUMN`` is dropped
from the suite for a batch without that column (``rating`` is optional in the contract).

Row numbers in reports are 0-based data rows as in the file: row 0 is the first line after the
header of a CSV, or the first row of a Parquet file.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recloop.data import INTERACTION_COLUMNS, ITEM_COLUMNS

logger = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parent.parent / "expectations"
SUITE_NAMES = ("interactions", "items")
MAX_EXAMPLES = 5
MAX_TEXT = 80  # characters of a string value kept in an example row
FUTURE_SLACK_SECONDS = 86_400  # clocks differ; a day ahead is still plausible, a century is not
READ_ERROR = "file_is_readable"  # pseudo-expectation for files that could not be parsed at all
# Pseudo-expectations of a CSV's shape, checked before it is parsed (csv_shape_report).
SHAPE_RULE = "rows_have_the_header_fields"
WHOLE_FILE_RULE = "file_ends_with_a_line_break"
NOT_A_LINK = "file_is_not_a_symbolic_link"  # checked by recloop.landing before any read
NOT_CHECKED = "could not be checked"
KNOWN_ITEM_COLUMN = "item_id_is_known"  # derived before validation, see the module docstring
WORDED_ITEM_COLUMN = "item_has_words"  # derived: the item's title or text is not blank
DERIVED_COLUMNS = (KNOWN_ITEM_COLUMN, WORDED_ITEM_COLUMN)

# Replacement characters mean a decoder gave up upstream; lone surrogates cannot be encoded as
# UTF-8 at all. Written as regex escapes so the JSON stays plain ASCII.
BAD_ENCODING_REGEX = r"[\x00\ufffd\ud800-\udfff]"
INTEGER_TYPES = [
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64",
]  # fmt: skip


# --------------------------------------------------------------------------------------------
# Reports


@dataclass
class Failure:
    """One rule a file broke."""

    file: str
    expectation: str  # the GX expectation type, e.g. expect_column_values_to_not_be_null
    column: str | None  # the column (or "a,b,c" for compound rules); None for file-level rules
    rule: str  # the rule in words, e.g. "user_id must not be null"
    unexpected_count: int | None = None  # rows breaking it, when countable
    examples: list[dict[str, Any]] = field(default_factory=list)  # up to 5, each with "row"

    def one_line(self) -> str:
        """``FILE: row R: RULE (expectation)``; the row is left out for file-level rules."""
        where = f"row {self.examples[0]['row']}: " if self.examples else ""
        return f"{self.file}: {where}{self.rule} ({self.expectation})"


@dataclass
class ValidationReport:
    """The outcome of validating the files of one batch."""

    success: bool
    failures: list[Failure] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    rules_checked: int = 0

    @classmethod
    def combine(cls, reports: list[ValidationReport]) -> ValidationReport:
        """One report for several files (fails if any part fails)."""
        return cls(
            success=all(r.success for r in reports),
            failures=[f for r in reports for f in r.failures],
            files=[name for r in reports for name in r.files],
            rules_checked=sum(r.rules_checked for r in reports),
        )

    def one_line(self) -> str:
        """The first failure in one line, plus how many more rules failed."""
        if self.success:
            return f"{', '.join(self.files)}: all {self.rules_checked} rules passed"
        first = self.failures[0].one_line()
        more = len(self.failures) - 1
        if more:
            first += f" [+{more} more rule{'s' if more > 1 else ''}]"
        return first

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict."""
        return {
            "success": self.success,
            "files": list(self.files),
            "rules_checked": self.rules_checked,
            "failures": [asdict(f) for f in self.failures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """Inverse of :meth:`to_dict`."""
        return cls(
            success=bool(data["success"]),
            failures=[Failure(**f) for f in data.get("failures", [])],
            files=list(data.get("files", [])),
            rules_checked=int(data.get("rules_checked", 0)),
        )

    def to_markdown(self) -> str:
        """A short human-readable report (what ``quarantine/<batch>/report.md`` holds)."""
        verdict = "passed" if self.success else f"failed {len(self.failures)} rule(s)"
        lines = [
            "# Validation report",
            "",
            f"Files: {', '.join(f'`{name}`' for name in self.files) or '-'}  ",
            f"Result: **{verdict}** ({self.rules_checked} rules checked)",
        ]
        for number, failure in enumerate(self.failures, start=1):
            count = (
                "" if failure.unexpected_count is None else f" — {failure.unexpected_count} row(s)"
            )
            lines += [
                "",
                f"## {number}. `{failure.file}`: {failure.rule}{count}",
                "",
                f"Expectation: `{failure.expectation}`"
                + (f" on `{failure.column}`" if failure.column else ""),
            ]
            if failure.examples:
                columns = list(failure.examples[0])
                lines += [
                    "",
                    "| " + " | ".join(columns) + " |",
                    "|" + "---|" * len(columns),
                ]
                for example in failure.examples:
                    cells = [_md_cell(example.get(c)) for c in columns]
                    lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"


def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def csv_shape_report(path: Path) -> ValidationReport | None:
    """A failed report when a CSV/TSV is not a whole table: a row without the header's number of
    fields (pandas would fill a missing trailing field with null and read on), or a last row
    without its line break (the file was cut off, maybe inside a number). None when the shape is
    sound. Read as UTF-8 (a decoding error raises, as reading the table would); blank lines are
    skipped as pandas skips them, so row numbers are those of every other rule."""
    path = Path(path)
    with open(path, "rb") as raw:
        raw.seek(0, 2)
        size = raw.tell()
        if size == 0:
            return None  # reading it reports the empty file
        raw.seek(size - 1)
        ends_with_break = raw.read(1) in (b"\n", b"\r")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        header = next(reader, None)
        if header is None:
            return None
        row, wrong, examples = -1, 0, []
        for fields in reader:
            if not fields:
                continue
            row += 1
            if len(fields) != len(header):
                wrong += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append({"row": row, "fields": len(fields)})
    failures = []
    if wrong:
        rule = f"every row must have the header's {len(header)} fields"
        failures.append(Failure(path.name, SHAPE_RULE, None, rule, wrong, examples))
    if not ends_with_break:
        rule = "the file must end with a line break (without one its last row was cut off)"
        last = [{"row": row}] if row >= 0 else []
        failures.append(Failure(path.name, WHOLE_FILE_RULE, None, rule, None, last))
    if not failures:
        return None
    return ValidationReport(success=False, failures=failures, files=[path.name])


def read_error_report(file: str, error: BaseException) -> ValidationReport:
    """A failed report for a file that could not be read (not UTF-8, not CSV/Parquet, ...)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    rule = f"file must be readable ({type(error).__name__}: {message})"
    return ValidationReport(
        success=False, failures=[Failure(file, READ_ERROR, None, rule)], files=[file]
    )


# --------------------------------------------------------------------------------------------
# Suites (built in code, stored as JSON)


def _ids_rules(column: str) -> list[tuple[str, dict[str, Any], str]]:
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": column}, f"{column} must not be null"),
        (
            "ExpectColumnValuesToMatchRegex",
            {"column": column, "regex": r"\S"},
            f"{column} must not be empty or blank",
        ),
    ]


def _encoding_rule(column: str) -> tuple[str, dict[str, Any], str]:
    return (
        "ExpectColumnValuesToNotMatchRegex",
        {"column": column, "regex": BAD_ENCODING_REGEX},
        f"{column} must be valid text (no NUL bytes, U+FFFD replacement characters or lone "
        "surrogates)",
    )


def _suite_rules(name: str) -> list[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """(expectation class, kwargs, rule in words, extra meta) for each rule of a suite."""
    rules: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []

    def add(spec: tuple[str, dict[str, Any], str], **meta: Any) -> None:
        rules.append((*spec, meta))

    if name == "interactions":
        add(
            (
                "ExpectTableRowCountToBeBetween",
                {"min_value": 1},
                "the file must hold at least one interaction",
            )
        )
        for column in INTERACTION_COLUMNS:
            add(("ExpectColumnToExist", {"column": column}, f"column {column} is required"))
        for column in ("user_id", "item_id"):
            for spec in _ids_rules(column):
                add(spec)
            add(_encoding_rule(column))
        add(
            ("ExpectColumnValuesToNotBeNull", {"column": "timestamp"}, "timestamp must not be null")
        )
        add(
            (
                "ExpectColumnValuesToBeInTypeList",
                {"column": "timestamp", "type_list": INTEGER_TYPES},
                "timestamp must be an integer (unix seconds or a position)",
            )
        )
        add(
            (
                "ExpectColumnValuesToBeBetween",
                {
                    "column": "timestamp",
                    "min_value": 0,
                    "max_value": {"$PARAMETER": "max_timestamp"},
                },
                "timestamp must be between 0 and now + 1 day",
            )
        )
        add(
            (
                "ExpectCompoundColumnsToBeUnique",
                {"column_list": list(INTERACTION_COLUMNS)},
                "an event (user_id, item_id, timestamp) must not repeat",
            )
        )
        add(
            (
                "ExpectColumnValuesToBeInSet",
                {"column": KNOWN_ITEM_COLUMN, "value_set": [True]},
                "item_id must be in the catalogue or in the batch's items file",
            ),
            reports_column="item_id",
        )
        add(
            (
                "ExpectColumnValuesToBeBetween",
                {"column": "rating", "min_value": 0, "max_value": 10},
                "rating must be between 0 and 10",
            ),
            when_column_present="rating",
        )
        add(_encoding_rule("event"), when_column_present="event")
    elif name == "items":
        for column in ITEM_COLUMNS:
            add(("ExpectColumnToExist", {"column": column}, f"column {column} is required"))
        for spec in _ids_rules("item_id"):
            add(spec)
        add(("ExpectColumnValuesToBeUnique", {"column": "item_id"}, "item_id must be unique"))
        for column in ITEM_COLUMNS:
            add(_encoding_rule(column))
        add(
            (
                "ExpectColumnValuesToBeInSet",
                {"column": WORDED_ITEM_COLUMN, "value_set": [True]},
                "an item must have a title or a text (the model reads them)",
            ),
            reports_column="title",
        )
    else:
        raise ValueError(f"unknown suite {name!r} (expected one of {SUITE_NAMES})")
    return rules


def build_suite(name: str) -> Any:
    """The GX ``ExpectationSuite`` named ``name`` ("interactions" or "items"), built in code."""
    gx = _gx()
    import great_expectations.expectations as gxe

    _batch_definition()  # suites need an active context
    suite = gx.ExpectationSuite(name=f"recloop_{name}")
    for class_name, kwargs, rule, meta in _suite_rules(name):
        expectation = getattr(gxe, class_name)(**kwargs, meta={"rule": rule, **meta})
        suite.add_expectation(expectation)
    return suite


def suite_json(name: str) -> dict[str, Any]:
    """The JSON form of :func:`build_suite` (what ``expectations/<name>.json`` holds)."""
    data = build_suite(name).to_json_dict()
    # Ids are assigned when a suite is saved to a context; a committed file must not churn.
    data.pop("id", None)
    for expectation in data.get("expectations", []):
        expectation.pop("id", None)
    return data


def write_suites(directory: Path = SUITES_DIR) -> list[Path]:
    """Regenerate ``expectations/*.json`` from :func:`build_suite` (reproducible, sorted keys)."""
    written = []
    for name in SUITE_NAMES:
        path = Path(directory) / f"{name}.json"
        path.write_text(json.dumps(suite_json(name), indent=2, sort_keys=True) + "\n")
        written.append(path)
    load_suite_json.cache_clear()
    return written


@functools.cache
def load_suite_json(name: str) -> dict[str, Any]:
    """The committed suite ``expectations/<name>.json``."""
    path = SUITES_DIR / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: missing; run `python -m recloop.validation --write-suites`"
        )
    return json.loads(path.read_text())


# --------------------------------------------------------------------------------------------
# Running a suite


@functools.cache
def _gx() -> Any:
    """``great_expectations`` imported on first use."""
    import great_expectations as gx

    return gx


@functools.cache
def _batch_definition() -> Any:
    """One ephemeral context per process with a whole-dataframe batch definition."""
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("recloop").add_dataframe_asset("batch")
    return asset.add_batch_definition_whole_dataframe("whole")


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if value is pd.NaT or (not isinstance(value, (str, bytes, list, dict)) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
    if isinstance(value, (bool, int, float)):
        return value
    return str(value)


def _examples(frame: pd.DataFrame, rows: list[Any]) -> list[dict[str, Any]]:
    """Up to MAX_EXAMPLES rows of ``frame`` as JSON-safe dicts with their row number."""
    out = []
    for row in rows[:MAX_EXAMPLES]:
        values = frame.loc[row]
        shown = [c for c in frame.columns if c not in DERIVED_COLUMNS]
        out.append({"row": int(row), **{str(c): _json_safe(values[c]) for c in shown}})
    return out


def _non_integer_rows(series: pd.Series) -> list[int]:
    """Rows whose value is present but not an integer (what a failed type rule points at)."""
    numeric = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & (numeric.isna() | (numeric % 1 != 0))
    return [int(i) for i in series.index[bad.to_numpy()]]


def _rule_columns(kwargs: dict[str, Any]) -> list[str]:
    if "column" in kwargs:
        return [kwargs["column"]]
    return list(kwargs.get("column_list", []))


def run_suite(
    name: str,
    frame: pd.DataFrame,
    *,
    file: str,
    parameters: dict[str, Any] | None = None,
) -> ValidationReport:
    """Validate ``frame`` against the committed suite ``name``; failures name ``file``."""
    gx = _gx()
    batch_definition = _batch_definition()
    frame = frame.reset_index(drop=True)  # row numbers are positions in the file
    data = load_suite_json(name)
    kept = [
        e
        for e in data["expectations"]
        if e.get("meta", {}).get("when_column_present", None) in (None, *frame.columns)
    ]
    suite = gx.ExpectationSuite(**{**data, "expectations": kept})
    order = {e["meta"]["rule"]: i for i, e in enumerate(kept)}
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    started = time.perf_counter()
    result = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES},
        expectation_parameters=parameters or {},
    )
    logger.debug("%s: %d rules in %.2fs", file, len(kept), time.perf_counter() - started)

    failures: list[tuple[int, Failure]] = []
    errored: list[tuple[int, Failure]] = []
    for outcome in result.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        kwargs = dict(config.kwargs)
        rule = config.meta.get("rule", config.type)
        columns = _rule_columns(kwargs)
        column = config.meta.get("reports_column") or ",".join(columns) or None
        details = outcome.result or {}
        failure = Failure(file, config.type, column, rule)
        if outcome.exception_info and outcome.exception_info.get("raised_exception") is not False:
            # A rule that could not run (e.g. on a non-numeric column) is worth reporting only
            # when nothing else already explains it: see the filtering below.
            failure.rule = f"{rule} ({NOT_CHECKED})"
            errored.append((order.get(rule, len(order)), failure))
            continue
        if "unexpected_count" in details:
            failure.unexpected_count = int(details["unexpected_count"])
            rows = list(details.get("partial_unexpected_index_list") or [])
            failure.examples = _examples(frame, rows)
        elif config.type == "expect_column_values_to_be_in_type_list" and column in frame:
            rows = _non_integer_rows(frame[column])
            failure.unexpected_count = len(rows)
            failure.examples = _examples(frame, rows)
        failures.append((order.get(rule, len(order)), failure))

    explained = {c for _, f in failures for c in (f.column or "").split(",") if c}
    missing = set().union(*(_rule_columns(e["kwargs"]) for e in kept)) - set(frame.columns)
    for position, failure in errored:
        columns = set((failure.column or "").split(",")) - {""}
        if columns & (explained | missing):
            continue
        failures.append((position, failure))
    failures.sort(key=lambda pair: pair[0])
    return ValidationReport(
        success=not failures,
        failures=[f for _, f in failures],
        files=[file],
        rules_checked=len(kept),
    )


_SURROGATES = re.compile(r"[\ud800-\udfff]")


def _prepare(frame: pd.DataFrame, id_columns: tuple[str, ...]) -> pd.DataFrame:
    """The frame as GX should see it.

    Ids are strings in the canonical form (a Parquet file may carry integers). Lone surrogates
    (possible only in frames built in memory: files must decode as UTF-8) are turned into U+FFFD,
    which the encoding rule reports, because GX cannot even hash a frame holding them.
    """
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(
                lambda v: _SURROGATES.sub("\ufffd", v) if isinstance(v, str) else v
            )
    for column in id_columns:
        if column not in frame or pd.api.types.is_string_dtype(frame[column].dtype):
            continue
        # Element-wise, so nulls stay null and odd strings (lone surrogates) are not re-encoded.
        frame[column] = (
            frame[column]
            .astype(object)
            .map(lambda v: v if v is None or isinstance(v, str) or pd.isna(v) else str(v))
        )
    return frame


def validate_items(items: pd.DataFrame, *, name: str) -> ValidationReport:
    """Validate an items table against ``expectations/items.json``."""
    frame = _prepare(items, ("item_id",))
    if {"title", "text"} <= set(frame.columns):
        blank = [frame[c].fillna("").astype(str).str.strip().eq("") for c in ("title", "text")]
        frame[WORDED_ITEM_COLUMN] = (~(blank[0] & blank[1])).astype(object)
    return run_suite("items", frame, file=name)


def validate_interactions(
    interactions: pd.DataFrame,
    known_item_ids: set[str],
    *,
    name: str,
    now: float | None = None,
) -> ValidationReport:
    """Validate an interactions table against ``expectations/interactions.json``.

    ``known_item_ids`` fills the catalogue rule; ``now`` (unix seconds, default the clock) sets
    the latest plausible timestamp.
    """
    now = time.time() if now is None else now
    parameters = {"max_timestamp": int(now) + FUTURE_SLACK_SECONDS}
    frame = _prepare(interactions, ("user_id", "item_id"))
    if "item_id" in frame:
        ids = frame["item_id"]
        known = ids.isin(known_item_ids).astype(object)
        frame[KNOWN_ITEM_COLUMN] = known.where(ids.notna(), None)
    return run_suite("interactions", frame, file=name, parameters=parameters)


def validate_batch(
    interactions: pd.DataFrame,
    items: pd.DataFrame | None,
    known_item_ids: set[str],
    *,
    interactions_name: str,
    items_name: str | None,
    now: float | None = None,
) -> ValidationReport:
    """Validate one arriving batch: the items file (if any), then the interactions.

    ``known_item_ids`` are the ids already in the catalogue; the ids in ``items`` are added to it,
    so a batch may bring the items its interactions refer to.
    """
    reports = []
    known = set(known_item_ids)
    if items is not None:
        reports.append(validate_items(items, name=items_name or "items"))
        if "item_id" in items:
            known |= {str(i) for i in items["item_id"].dropna()}
    reports.insert(0, validate_interactions(interactions, known, name=interactions_name, now=now))
    return ValidationReport.combine(reports)


def main(argv: list[str] | None = None) -> int:
    """``python -m recloop.validation --write-suites``: regenerate the committed suites."""
    parser = argparse.ArgumentParser(prog="python -m recloop.validation", description=main.__doc__)
    parser.add_argument("--write-suites", action="store_true", help="write expectations/*.json")
    args = parser.parse_args(argv)
    if not args.write_suites:
        parser.print_help()
        return 2
    for path in write_suites():
        print(path)  # a command-line entry point, not library code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
