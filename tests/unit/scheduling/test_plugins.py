"""Every filter, scorer and picker, table-driven."""

import pytest

from router.scheduling.filters import KVHeadroomFilter, QueueDepthFilter
from router.scheduling.pickers import MaxScorePicker, RandomPicker, RoundRobinPicker
from router.scheduling.scorers import CacheSpreadScorer, KVHeadroomScorer, PrefixCacheScorer, QueueScorer
from router.scheduling.types import ReplicaView, RequestView


def replica(name, waiting=0, running=0, kv=0.0, in_flight=0, matched=0, held=0):
    return ReplicaView(name, waiting=waiting, running=running, kv_cache_usage=kv, in_flight=in_flight,
                       matched_blocks=matched, held_blocks=held)


REQ = RequestView(prompt_tokens=512, block_hashes=[1, 2, 3, 4], block_size=128)
EMPTY_REQ = RequestView(prompt_tokens=20, block_hashes=[], block_size=128)


@pytest.mark.parametrize(
    "flt, replicas, kept",
    [
        (KVHeadroomFilter(0.9), [replica("a", kv=0.5), replica("b", kv=0.9), replica("c", kv=0.95)], ["a"]),
        (KVHeadroomFilter(0.9), [], []),
        (QueueDepthFilter(4), [replica("a", waiting=4), replica("b", waiting=3, in_flight=2), replica("c")], ["a", "c"]),
        (QueueDepthFilter(0), [replica("a"), replica("b", in_flight=1)], ["a"]),
    ],
)
def test_filters(flt, replicas, kept):
    assert [r.replica for r in flt.keep(REQ, replicas)] == kept


@pytest.mark.parametrize(
    "scorer, request_, replicas, expected",
    [
        (PrefixCacheScorer(), REQ, [replica("a", matched=4), replica("b", matched=1), replica("c")], [1.0, 0.25, 0.0]),
        (PrefixCacheScorer(), EMPTY_REQ, [replica("a"), replica("b")], [0.0, 0.0]),
        (QueueScorer(), REQ, [replica("a", waiting=2, running=2), replica("b", running=1, in_flight=1), replica("c")], [0.0, 0.5, 1.0]),
        (QueueScorer(), REQ, [replica("a"), replica("b")], [1.0, 1.0]),
        (KVHeadroomScorer(), REQ, [replica("a", kv=0.25), replica("b", kv=1.0)], [0.75, 0.0]),
        (CacheSpreadScorer(), REQ, [replica("a", held=30), replica("b", held=15), replica("c")], [0.0, 0.5, 1.0]),
        (CacheSpreadScorer(), REQ, [replica("a"), replica("b")], [1.0, 1.0]),
    ],
)
def test_scorers(scorer, request_, replicas, expected):
    assert scorer.score(request_, replicas) == pytest.approx(expected)


@pytest.mark.parametrize(
    "scores, expected",
    [
        ({"a": 0.2, "b": 0.9, "c": 0.5}, ["b", "c", "a"]),
        ({"b": 0.5, "a": 0.5, "c": 0.5}, ["a", "b", "c"]),  # ties break on replica id
        ({"a": 0.30000000001, "b": 0.3}, ["a", "b"]),
        ({"b": 0.1 + 0.2, "a": 0.3}, ["b", "a"]),  # exact floats: 0.1 + 0.2 > 0.3
        ({}, []),
    ],
)
def test_max_score_picker(scores, expected):
    assert MaxScorePicker().order(list(scores), scores) == expected


def test_round_robin_picker_rotates_and_ignores_scores():
    picker = RoundRobinPicker()
    scores = {"c": 1.0, "a": 0.0, "b": 0.0}
    firsts = [picker.order(list(scores), scores)[0] for _ in range(4)]
    assert firsts == ["a", "b", "c", "a"]


def test_random_picker_is_a_permutation():
    picker = RandomPicker(seed=0)
    for _ in range(5):
        assert sorted(picker.order(["a", "b", "c"], {})) == ["a", "b", "c"]
