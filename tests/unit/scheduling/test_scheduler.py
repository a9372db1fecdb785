"""Profiles (clamping, weights) and the scheduler's decision, including the disaggregation decider."""

import pytest

from pdserve.config import ProfileSpec
from router.scheduling.decider import DisaggregationDecider
from router.scheduling.profile import SchedulingProfile
from router.scheduling.scheduler import COLOCATED, DISAGGREGATED, NoReplicas, Scheduler
from router.scheduling.types import ReplicaView, RequestView
from tests.unit.scheduling.test_plugins import replica

REQ = RequestView(prompt_tokens=1024, block_hashes=list(range(8)), block_size=128)


def profile(filters=None, scorers=None, picker="max_score", name="p"):
    return SchedulingProfile.from_spec(name, ProfileSpec(filters=filters or {}, scorers=scorers or {}, picker=picker))


class OutOfRangeScorer:
    name = "out_of_range"

    def score(self, request, replicas):
        return [5.0, -3.0][: len(replicas)]


def test_profile_clamps_scores_and_weighs_them():
    p = profile()
    p.scorers = [(OutOfRangeScorer(), 2.0)]
    result = p.rank(REQ, [replica("a"), replica("b")])
    assert result.scores == {"a": 2.0, "b": 0.0}
    assert result.ranking == ["a", "b"]
    assert p.timings_s["out_of_range"] >= 0


def test_profile_reports_what_each_filter_dropped():
    result = profile(filters={"kv_headroom": {"max_kv_usage": 0.5}}).rank(REQ, [replica("a", kv=0.9), replica("b")])
    assert result.ranking == ["b"]
    assert result.filtered_out == {"a": "kv_headroom"}


@pytest.mark.parametrize(
    "weights, expected_first",
    [
        ({"prefix_cache": 2.0, "queue": 1.0}, "cached"),  # cache affinity outweighs a little load
        ({"prefix_cache": 0.1, "queue": 1.0}, "idle"),  # load-first profile
        ({"prefix_cache": 0.0, "queue": 0.0}, "cached"),  # no scorer: ties break on id ("cached" < "idle")
    ],
)
def test_weights_decide_between_cache_affinity_and_load(weights, expected_first):
    replicas = [replica("cached", running=2, matched=8), replica("idle")]
    assert profile(scorers=weights).rank(REQ, replicas).ranking[0] == expected_first


def scheduler(min_uncached=64):
    return Scheduler(
        prefill=profile(scorers={"prefix_cache": 2.0, "queue": 1.0}, name="prefill"),
        decode=profile(filters={"kv_headroom": {"max_kv_usage": 0.95}}, scorers={"kv_headroom": 1.0, "queue": 1.0}, name="decode"),
        decider=DisaggregationDecider(min_uncached),
    )


@pytest.mark.parametrize(
    "prompt_tokens, decode_matched, prefill_alive, max_tokens, route",
    [
        (1024, 0, True, 64, DISAGGREGATED),  # long, nothing cached on decode
        (40, 0, True, 64, COLOCATED),  # short prompt
        (1024, 8, True, 64, COLOCATED),  # long, but decode holds all of it (a follow-up turn)
        (1024, 7, True, 64, DISAGGREGATED),  # 128 uncached tokens >= 64
        (1024, 0, False, 64, COLOCATED),  # no prefill replica alive: decode prefills itself
        (1024, 0, True, 1, COLOCATED),  # one output token: there is no decode phase to hand off to
        (1024, 0, True, 0, DISAGGREGATED),  # output budget not known
    ],
)
def test_decisions(prompt_tokens, decode_matched, prefill_alive, max_tokens, route):
    request = RequestView(prompt_tokens, list(range(prompt_tokens // 128)), 128, max_tokens)
    prefill = [replica("p1"), replica("p2", matched=3)] if prefill_alive else []
    decision = scheduler().schedule(request, prefill, [replica("d1", matched=decode_matched)])
    assert decision.route == route
    assert decision.decode[0] == "d1"
    if route == DISAGGREGATED:
        assert decision.prefill[0] == "p2"  # the replica holding the prefix
        assert decision.prefill_matched_blocks == 3
    else:
        assert decision.prefill == []


def test_saturated_prefill_pool_falls_back_to_colocated():
    s = scheduler()
    s.prefill = profile(filters={"queue_depth": {"max_waiting": 1}}, name="prefill")
    decision = s.schedule(REQ, [replica("p1", waiting=5)], [replica("d1")])
    assert (decision.route, decision.reason) == (COLOCATED, "prefill pool saturated")


def test_decode_pool_full_is_no_replicas():
    with pytest.raises(NoReplicas, match="d1: kv_headroom"):
        scheduler().schedule(REQ, [replica("p1")], [replica("d1", kv=0.99)])
    with pytest.raises(NoReplicas, match="none alive"):
        scheduler().schedule(REQ, [replica("p1")], [])


def test_new_prefixes_spread_over_the_pool_and_known_ones_stick():
    """On an idle pool, a prefix nobody holds goes to the emptier cache; a held one stays put."""
    p = profile(scorers={"prefix_cache": 2.0, "queue": 1.0, "cache_spread": 0.5})
    new = p.rank(REQ, [replica("a", held=20), replica("b", held=5)])
    known = p.rank(REQ, [replica("a", held=20, matched=8), replica("b", held=5)])
    assert (new.ranking[0], known.ranking[0]) == ("b", "a")
