"""The promotion decision: the best of candidate, champion and baselines serves."""

import pytest

from recloop.config import GateConfig
from recloop.gate import Decision, choose_champion

pytestmark = pytest.mark.unit

POLICY = GateConfig()  # ndcg_at_10, no margin


def m(value: float) -> dict[str, float]:
    return {"ndcg_at_10": value, "recall_at_10": value * 2}


def bases(pop: float = 0.01, recent: float = 0.02, trans: float = 0.03) -> dict:
    return {"popularity": m(pop), "recent_popularity": m(recent), "transitions": m(trans)}


def test_reason_quotes_every_number():
    decision = choose_champion(m(0.0812), m(0.0750), bases(0.02, 0.03, 0.04), POLICY)
    assert decision == Decision("candidate", decision.reason) and decision.promote
    assert decision.reason.startswith("promote: ndcg_at_10 0.0812; ")
    for text in (
        "> popularity 0.0200",
        "> recent popularity 0.0300",
        "> transitions 0.0400",
        "> champion 0.0750 (+8.3%, needs +0.0%)",
    ):
        assert text in decision.reason


def test_first_model_serves_iff_it_beats_every_baseline():
    assert choose_champion(m(0.05), None, bases(), POLICY).promote
    lost = choose_champion(m(0.025), None, bases(), POLICY)
    assert lost.winner == "transitions" and lost.baseline == "transitions"
    assert lost.reason.startswith("serve transitions: ")
    assert "> recent popularity 0.0200" in lost.reason and "<= transitions 0.0300" in lost.reason
    # a tie with a baseline is not a win
    assert choose_champion(m(0.03), None, bases(), POLICY).winner == "transitions"


def test_tie_with_champion_keeps_champion():
    decision = choose_champion(m(0.05), m(0.05), bases(), POLICY)
    assert decision.winner == "champion" and not decision.promote and decision.baseline is None
    assert "<= champion" in decision.reason


def test_relative_margin():
    policy = GateConfig(min_relative_gain=0.10)
    assert choose_champion(m(0.105), m(0.100), bases(), policy).winner == "champion"  # +5%
    assert choose_champion(m(0.120), m(0.100), bases(), policy).promote  # +20%


def test_beating_the_champion_is_not_enough_below_a_baseline():
    # Both below recent popularity: the champion must go, and the baseline serves.
    decision = choose_champion(m(0.03), m(0.02), bases(0.01, 0.04, 0.01), POLICY)
    assert decision.winner == "recent_popularity"
    assert "> champion" in decision.reason and "<= recent popularity 0.0400" in decision.reason
    assert "champion below recent popularity" in decision.reason


def test_a_champion_above_every_baseline_stays_when_the_candidate_loses_to_one():
    decision = choose_champion(m(0.05), m(0.06), bases(0.01, 0.055, 0.01), POLICY)
    assert decision.winner == "champion"


def test_a_champion_below_a_baseline_is_replaced_without_the_margin():
    # A baseline champion gone stale: the candidate above every baseline takes over even though
    # it does not reach the champion's margin, since the champion must go anyway.
    policy = GateConfig(min_relative_gain=0.5)
    decision = choose_champion(m(0.045), m(0.04), bases(0.01, 0.042, 0.01), policy)
    assert decision.promote
    # ... and the refitted baseline replaces its stale self when no candidate beats it.
    stale = choose_champion(m(0.02), m(0.04), bases(0.01, 0.042, 0.01), policy)
    assert stale.winner == "recent_popularity"


def test_other_metric_and_zero_champion():
    policy = GateConfig(metric="recall_at_10")
    assert choose_champion(m(0.01), m(0.0), bases(0.001, 0.001, 0.001), policy).promote


def test_missing_metric_or_baselines_is_an_error():
    with pytest.raises(KeyError, match="ndcg_at_10"):
        choose_champion({"mrr": 0.1}, None, bases(), POLICY)
    with pytest.raises(KeyError, match="popularity"):
        choose_champion(m(0.1), None, {"popularity": {"mrr": 0.1}}, POLICY)
    with pytest.raises(ValueError, match="baselines"):
        choose_champion(m(0.1), None, {}, POLICY)


def test_forgetting_blocks_a_candidate_that_lost_the_earlier_data():
    policy = GateConfig(max_retention_drop=0.1)
    forgot = choose_champion(m(0.06), m(0.05), bases(), policy, retention=(m(0.08), m(0.10)))
    assert forgot.winner == "champion"
    assert "earlier data 0.0800 < 0.0900 (champion 0.1000, drop +20.0%, allowed 10.0%)" in (
        forgot.reason
    )
    kept = choose_champion(m(0.06), m(0.05), bases(), policy, retention=(m(0.095), m(0.10)))
    assert kept.promote and "earlier data 0.0950 >= 0.0900" in kept.reason


def test_forgetting_check_off_or_without_champion():
    off = GateConfig(max_retention_drop=-1.0)
    assert choose_champion(m(0.06), m(0.05), bases(), off, retention=(m(0.0), m(0.1))).promote
    # The first model has no champion to forget relative to.
    assert choose_champion(m(0.06), None, bases(), POLICY, retention=(m(0.0), m(0.1))).promote
