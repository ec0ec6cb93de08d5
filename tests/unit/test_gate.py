"""The promotion decision."""

import pytest

from recloop.config import GateConfig
from recloop.gate import Decision, should_promote

pytestmark = pytest.mark.unit

POLICY = GateConfig()  # ndcg_at_10, no margin, must beat popularity


def m(value: float) -> dict[str, float]:
    return {"ndcg_at_10": value, "recall_at_10": value * 2}


def test_reason_quotes_the_numbers():
    decision = should_promote(m(0.0812), m(0.0750), m(0.0200), POLICY)
    assert decision == Decision(True, decision.reason)
    assert "ndcg_at_10 0.0812 > champion 0.0750 (+8.3%, needs +0.0%)" in decision.reason
    assert "> popularity 0.0200" in decision.reason


def test_first_model_promoted_iff_it_beats_popularity():
    assert should_promote(m(0.05), None, m(0.02), POLICY).promote
    lost = should_promote(m(0.01), None, m(0.02), POLICY)
    assert not lost.promote
    assert "<= popularity 0.0200" in lost.reason
    # a tie with popularity is not a win
    assert not should_promote(m(0.02), None, m(0.02), POLICY).promote


def test_first_model_without_popularity_requirement():
    policy = GateConfig(must_beat_popularity=False)
    assert should_promote(m(0.0), None, None, policy).promote


def test_tie_with_champion_keeps_champion():
    decision = should_promote(m(0.05), m(0.05), m(0.01), POLICY)
    assert not decision.promote
    assert "<= champion" in decision.reason


def test_relative_margin():
    policy = GateConfig(min_relative_gain=0.10)
    assert not should_promote(m(0.105), m(0.100), m(0.01), policy).promote  # +5% < +10%
    assert should_promote(m(0.120), m(0.100), m(0.01), policy).promote  # +20%


def test_beating_champion_is_not_enough_when_below_popularity():
    decision = should_promote(m(0.03), m(0.02), m(0.04), POLICY)
    assert not decision.promote
    assert "> champion" in decision.reason and "<= popularity" in decision.reason


def test_other_metric_and_zero_champion():
    policy = GateConfig(metric="recall_at_10")
    assert should_promote(m(0.01), m(0.0), m(0.001), policy).promote


def test_missing_metric_is_an_error():
    with pytest.raises(KeyError, match="ndcg_at_10"):
        should_promote({"mrr": 0.1}, None, m(0.0), POLICY)
    with pytest.raises(ValueError):
        should_promote(m(0.1), None, None, POLICY)


def test_forgetting_blocks_a_candidate_that_lost_the_earlier_data():
    policy = GateConfig(max_retention_drop=0.1)
    forgot = should_promote(m(0.06), m(0.05), m(0.01), policy, retention=(m(0.08), m(0.10)))
    assert not forgot.promote
    assert "earlier data 0.0800 < 0.0900 (champion 0.1000, drop +20.0%, allowed 10.0%)" in (
        forgot.reason
    )
    kept = should_promote(m(0.06), m(0.05), m(0.01), policy, retention=(m(0.095), m(0.10)))
    assert kept.promote and "earlier data 0.0950 >= 0.0900" in kept.reason


def test_forgetting_check_off_or_without_champion():
    off = GateConfig(max_retention_drop=-1.0)
    assert should_promote(m(0.06), m(0.05), m(0.01), off, retention=(m(0.0), m(0.1))).promote
    # The first model has no champion to forget relative to.
    assert should_promote(m(0.06), None, m(0.01), POLICY, retention=(m(0.0), m(0.1))).promote
