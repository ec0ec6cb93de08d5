"""The Great Expectations suites against good and bad rows (recloop/validation.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from batch_helpers import DATASETS, T0, make_interactions, make_items

from recloop.validation import (
    SUITE_NAMES,
    SUITES_DIR,
    ValidationReport,
    read_error_report,
    suite_json,
    validate_batch,
    validate_items,
)

pytestmark = pytest.mark.data

NOW = T0 + 86_400 * 30
KNOWN = {f"i{k}" for k in range(5)}


def check(interactions: pd.DataFrame, items: pd.DataFrame | None = None, known=KNOWN):
    return validate_batch(
        interactions,
        items,
        known,
        interactions_name="batch.csv",
        items_name="items.csv" if items is not None else None,
        now=NOW,
    )


@pytest.mark.parametrize("name", SUITE_NAMES)
def test_committed_suites_are_what_the_code_builds(name: str) -> None:
    committed = json.loads((SUITES_DIR / f"{name}.json").read_text())
    assert committed == json.loads(json.dumps(suite_json(name))), (
        f"expectations/{name}.json is stale: run `python -m recloop.validation --write-suites`"
    )


def test_good_rows_pass() -> None:
    report = check(make_interactions())
    assert report.success, report.one_line()
    assert report.failures == []
    assert report.one_line().startswith("batch.csv: all ")


def test_good_rows_pass_without_optional_columns_and_with_positions() -> None:
    frame = make_interactions().drop(columns=["rating"])
    frame["timestamp"] = range(len(frame))  # a source with order only: positions are legal
    assert check(frame).success


def test_good_batch_with_items_brings_its_own_item_ids() -> None:
    frame = make_interactions()
    frame.loc[0, "item_id"] = "new-item"
    assert not check(frame).success
    report = check(frame, make_items(["new-item"]))
    assert report.success, report.one_line()
    assert report.files == ["batch.csv", "items.csv"]


def _with(column: str, values: list) -> pd.DataFrame:
    frame = make_interactions().head(len(values)).copy()
    frame[column] = pd.Series(values, dtype=object)
    return frame


NOT_NULL = "expect_column_values_to_not_be_null"
MATCH = "expect_column_values_to_match_regex"
NOT_MATCH = "expect_column_values_to_not_match_regex"
BETWEEN = "expect_column_values_to_be_between"
TYPE = "expect_column_values_to_be_in_type_list"
IN_SET = "expect_column_values_to_be_in_set"
EVENT = "user_id,item_id,timestamp"
YEAR_2200 = 7_258_118_400

# case: (interactions, expectation that must fail, its column, first bad row)
BAD_INTERACTIONS = {
    "missing column": (
        make_interactions().drop(columns=["timestamp"]), "expect_column_to_exist", "timestamp", None
    ),
    "null user id": (_with("user_id", ["u1", None, "u2"]), NOT_NULL, "user_id", 1),
    "blank item id": (_with("item_id", ["i1", "i2", "  "]), MATCH, "item_id", 2),
    "negative timestamp": (_with("timestamp", [T0, -5, T0]), BETWEEN, "timestamp", 1),
    "far-future timestamp": (_with("timestamp", [T0, T0, YEAR_2200]), BETWEEN, "timestamp", 2),
    "text timestamp": (_with("timestamp", ["2023-11-14", T0, T0]), TYPE, "timestamp", 0),
    "fractional timestamp": (_with("timestamp", [T0 + 0.5, T0, T0]), TYPE, "timestamp", 0),
    "rating above 10": (_with("rating", [4.0, 11.0, 3.0]), BETWEEN, "rating", 1),
    "negative rating": (_with("rating", [-1.0, 1.0, 3.0]), BETWEEN, "rating", 0),
    "duplicate event": (
        pd.concat([make_interactions(), make_interactions().iloc[[2]]], ignore_index=True),
        "expect_compound_columns_to_be_unique", EVENT, 2,
    ),
    "unknown item id": (_with("item_id", ["i1", "nope", "i2"]), IN_SET, "item_id", 1),
    "replacement character": (_with("user_id", ["u1", "u\ufffd", "u2"]), NOT_MATCH, "user_id", 1),
    "lone surrogate": (_with("item_id", ["i1", "i2", "i\ud800"]), NOT_MATCH, "item_id", 2),
    "no rows": (make_interactions().iloc[:0], "expect_table_row_count_to_be_between", None, None),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INTERACTIONS))
def test_bad_interactions_fail_naming_the_rule(case: str) -> None:
    frame, expectation, column, row = BAD_INTERACTIONS[case]
    report = check(frame)
    assert not report.success
    named = [(f.expectation, f.column) for f in report.failures]
    assert (expectation, column) in named, named
    failure = next(f for f in report.failures if (f.expectation, f.column) == (expectation, column))
    assert failure.file == "batch.csv"
    if row is not None:
        assert failure.examples[0]["row"] == row
        assert failure.unexpected_count >= 1
        assert report.one_line().startswith(f"batch.csv: row {row}: ") or len(report.failures) > 1
    json.dumps(report.to_dict())  # JSON-safe, even with odd characters


def test_missing_column_is_reported_once() -> None:
    report = check(make_interactions().drop(columns=["user_id"]))
    assert [f.expectation for f in report.failures] == ["expect_column_to_exist"]
    assert report.one_line() == "batch.csv: column user_id is required (expect_column_to_exist)"


def test_one_line_counts_the_other_rules() -> None:
    frame = _with("user_id", [None, "u1", "u2"])
    frame.loc[1, "rating"] = 99.0
    report = check(frame)
    assert report.one_line() == (
        "batch.csv: row 0: user_id must not be null (expect_column_values_to_not_be_null)"
        " [+1 more rule]"
    )


def test_text_timestamps_report_the_type_rule_only() -> None:
    report = check(_with("timestamp", ["soon", "later", "never"]))
    assert [f.expectation for f in report.failures] == ["expect_column_values_to_be_in_type_list"]
    assert report.failures[0].unexpected_count == 3


def test_examples_are_capped_and_markdown_is_readable() -> None:
    frame = make_interactions(n_users=4, per_user=5)
    frame["rating"] = 42.0
    report = check(frame)
    (failure,) = report.failures
    assert failure.unexpected_count == 20
    assert [e["row"] for e in failure.examples] == [0, 1, 2, 3, 4]
    markdown = report.to_markdown()
    assert "rating must be between 0 and 10" in markdown
    assert "| row | user_id | item_id | timestamp | rating |" in markdown
    assert ValidationReport.from_dict(report.to_dict()) == report


def test_integer_ids_are_read_as_strings() -> None:
    frame = make_interactions()
    frame["item_id"] = frame["item_id"].str[1:].astype(int)  # a Parquet file may carry ints
    assert check(frame, known={str(k) for k in range(5)}).success


@pytest.mark.parametrize(
    ("items", "expectation", "column"),
    [
        (make_items(["a", "b"]).drop(columns=["text"]), "expect_column_to_exist", "text"),
        (make_items(["a", "a"]), "expect_column_values_to_be_unique", "item_id"),
        (make_items(["a", None]), "expect_column_values_to_not_be_null", "item_id"),
        (make_items(["a", ""]), "expect_column_values_to_match_regex", "item_id"),
        (make_items(["a", "b"], "Caf\ufffd"), "expect_column_values_to_not_match_regex", "title"),
        (
            make_items(["a"]).assign(text=pd.Series(["bad \udc80"], dtype=object)),
            "expect_column_values_to_not_match_regex",
            "text",
        ),
    ],
)
def test_bad_items_fail_naming_the_rule(items: pd.DataFrame, expectation: str, column: str) -> None:
    report = validate_items(items, name="items.csv")
    assert not report.success
    assert (expectation, column) in [(f.expectation, f.column) for f in report.failures]
    assert all(f.file == "items.csv" for f in report.failures)


def test_good_items_pass() -> None:
    assert validate_items(make_items(["a", "b", "c"]), name="items.csv").success


def test_read_error_report_names_the_file() -> None:
    report = read_error_report("batch.csv", UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"))
    assert not report.success
    assert report.one_line().startswith("batch.csv: file must be readable (UnicodeDecodeError")


def test_real_movielens_slice_validates() -> None:
    folder = DATASETS / "movielens-latest-small"
    if not (folder / "ratings.csv").exists():
        pytest.skip(f"{folder} is absent (the shared datasets are not mounted)")
    ratings = pd.read_csv(folder / "ratings.csv", nrows=500)
    interactions = pd.DataFrame(
        {
            "user_id": ratings["userId"].astype(str),
            "item_id": ratings["movieId"].astype(str),
            "timestamp": ratings["timestamp"].astype("int64"),
            "rating": ratings["rating"].astype(float),
        }
    )
    movies = pd.read_csv(folder / "movies.csv", dtype={"movieId": str})
    items = pd.DataFrame(
        {"item_id": movies["movieId"], "title": movies["title"], "text": movies["genres"]}
    )
    report = validate_batch(
        interactions, items, set(), interactions_name="ratings.csv", items_name="movies.csv"
    )
    assert report.success, report.one_line()
