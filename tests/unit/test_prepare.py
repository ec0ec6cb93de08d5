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
