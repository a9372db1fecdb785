"""Serve's RequestRouter honouring the scheduler's ranking (fake replicas, no Ray cluster)."""

import asyncio
from types import SimpleNamespace

from router.replica_picking import PolicyRequestRouter, pin, pinned_ranking


def fake_replica(name):
    return SimpleNamespace(replica_id=SimpleNamespace(unique_id=name))


def fake_pending(session_id):
    return SimpleNamespace(metadata=SimpleNamespace(session_id=session_id))


def make_router(policy="round_robin"):
    router = object.__new__(PolicyRequestRouter)  # Serve's constructor needs a live controller
    router.initialize_state(policy=policy)
    return router


def choose(router, names, session_id):
    ranks = asyncio.run(router.choose_replicas([fake_replica(n) for n in names], fake_pending(session_id)))
    return [[r.replica_id.unique_id for r in rank] for rank in ranks]


def test_pin_round_trip():
    assert pinned_ranking(pin(["a", "b", "c", "d", "e"])) == ["a", "b", "c", "d"]
    assert pinned_ranking("") == [] and pinned_ranking("user-session") == []


def test_pinned_ranking_first_then_the_rest():
    assert choose(make_router(), ["c", "a", "b"], pin(["b", "a"])) == [["b"], ["a"], ["c"]]


def test_dead_pinned_replica_is_skipped():
    assert choose(make_router(), ["a", "c"], pin(["b", "c"])) == [["c"], ["a"]]


def test_no_pin_uses_the_fallback_policy():
    router = make_router()
    firsts = [choose(router, ["a", "b"], "")[0][0] for _ in range(4)]
    assert firsts == ["a", "b", "a", "b"]


def test_no_replicas():
    assert choose(make_router(), [], pin(["a"])) == []


def test_unknown_fallback_policy_names_the_known_ones():
    import pytest

    with pytest.raises(ValueError, match="round_robin"):
        make_router("fastest")
