"""The forgetting check's cases: earlier events that the champion and the candidate both learned."""

from __future__ import annotations

import pandas as pd
import pytest

from tasks.prepare import retention_cases

pytestmark = pytest.mark.unit


def test_retention_cases_use_the_second_to_last_event_of_absent_users() -> None:
    prior = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "b", "b", "c", "c"],
            "item_id": ["1", "2", "3", "4", "5", "6", "7", "1", "2"],
            "timestamp": [1, 2, 3, 4, 1, 2, 3, 1, 2],
        }
    )
    cases = retention_cases(prior, arriving_users={"b"}, max_users=10)
    # b is in the new batch; c has too few events; a: target 3 (its last, 4, may have been
    # held out of the champion's training), history 1, 2.
    assert cases.user_ids == ["a"]
    assert cases.histories == [["1", "2"]] and cases.targets == ["3"]


def test_retention_cases_are_a_seeded_sample() -> None:
    users = [f"u{i:02d}" for i in range(30)]
    prior = pd.DataFrame(
        {
            "user_id": [u for u in users for _ in range(3)],
            "item_id": ["1", "2", "3"] * 30,
            "timestamp": [1, 2, 3] * 30,
        }
    )
    first = retention_cases(prior, set(), max_users=5)
    assert len(first) == 5 and first.user_ids == sorted(first.user_ids)
    assert retention_cases(prior, set(), max_users=5).user_ids == first.user_ids


def test_retention_cases_prefer_the_previous_window() -> None:
    earlier = pd.DataFrame(
        {
            "user_id": ["a", "a", "a", "a", "b", "b", "b"],
            "item_id": ["1", "2", "3", "4", "5", "6", "7"],
            "timestamp": [1, 2, 3, 4, 1, 2, 3],
        }
    )
    # The batch the champion learned last: c's second-to-last event (8) lies in it, a's does not
    # (only a's last, 9), d has two events in it but only two in all.
    window = pd.DataFrame(
        {
            "user_id": ["c", "c", "c", "a", "d", "d"],
            "item_id": ["6", "8", "2", "9", "1", "2"],
            "timestamp": [10, 11, 12, 13, 10, 11],
        }
    )
    prior = pd.concat([earlier, window], ignore_index=True)
    cases = retention_cases(prior, set(), max_users=10, previous_window=window, min_window_users=1)
    assert cases.scope == "previous window"
    assert cases.user_ids == ["c"] and cases.histories == [["6"]] and cases.targets == ["8"]
    # Too few users in the previous window: every absent user's earlier event instead.
    wide = retention_cases(prior, set(), max_users=10, previous_window=window, min_window_users=2)
    assert wide.scope == "earlier events"
    assert wide.user_ids == ["a", "b", "c"] and wide.targets == ["4", "6", "8"]
