"""Placement end to end against a real Redis: two router replicas agree, and a restart loses nothing."""

import asyncio

import redis.asyncio as aioredis

from router.block_hashing import BlockHasher
from router.load_view import LoadReporter
from router.placement import Placement
from router.prefix_index import PrefixIndex
from tests.unit.factories import make_config

BLOCK = 128


def prompt(group: int, length: int = 600) -> list[int]:
    return [1000 * group + i % 50 for i in range(length)]


async def seed_cluster(r, namespace: str):
    """Three prefill and two decode replicas report load; prefill p2 holds group 1's prefix."""
    for pool, replicas in (("prefill", ["p1", "p2", "p3"]), ("decode", ["d1", "d2"])):
        for name in replicas:
            figures = {"waiting": 0, "running": 1 if name == "d1" else 0, "kv_cache_usage": 0.1}
            await LoadReporter(r, namespace, pool, name, lambda f=figures: f, ttl_s=30).report_once()
    await PrefixIndex(r, namespace, "prefill").record_stored("p2", BlockHasher(BLOCK).chain(prompt(1))[:3])


def test_two_router_replicas_place_every_request_the_same_way(redis_url):
    config = make_config(redis={"url": redis_url, "namespace": "agree"})

    async def main():
        clients = [aioredis.from_url(redis_url) for _ in range(3)]
        await seed_cluster(clients[0], "agree")
        routers = [Placement.create(c, config) for c in clients[:2]]
        for router in routers:
            await router.start()
        decisions = []
        for group in range(5):
            pair = [await router.place(prompt(group)) for router in routers]
            decisions.append(pair)
        # A router restarted from nothing (new process, new client) reads the same shared state.
        restarted = Placement.create(clients[2], config)
        await restarted.start()
        after_restart = await restarted.place(prompt(1))
        for router in routers + [restarted]:
            await router.stop()
        for c in clients:
            await c.aclose()
        return decisions, after_restart

    decisions, after_restart = asyncio.run(main())
    for a, b in decisions:
        assert (a.route, a.prefill, a.decode) == (b.route, b.prefill, b.decode)
    assert decisions[1][0].prefill[0] == "p2"  # the replica holding group 1's prefix
    assert decisions[1][0].prefill_matched_blocks == 3
    assert all(d[0].decode[0] == "d2" for d in decisions)  # d1 is busier
    assert (after_restart.prefill[0], after_restart.prefill_matched_blocks) == ("p2", 3)


def test_in_flight_requests_spread_a_burst(redis_url):
    config = make_config(redis={"url": redis_url, "namespace": "burst"})

    async def main():
        client = aioredis.from_url(redis_url)
        await seed_cluster(client, "burst")
        router = Placement.create(client, config)
        await router.start()
        firsts = []
        contexts = []
        for _ in range(3):  # same uncached prompt three times before any load report changes
            decision = await router.place(prompt(7))
            firsts.append(decision.prefill[0])
            ctx = router.track(decision.prefill[0])
            ctx.__enter__()
            contexts.append(ctx)
        for ctx in contexts:
            ctx.__exit__(None, None, None)
        await router.stop()
        await client.aclose()
        return firsts, dict(router.in_flight)

    firsts, left = asyncio.run(main())
    assert sorted(firsts) == ["p1", "p2", "p3"]
    assert left == {}


def test_short_prompt_is_colocated(redis_url):
    config = make_config(redis={"url": redis_url, "namespace": "short"})

    async def main():
        client = aioredis.from_url(redis_url)
        await seed_cluster(client, "short")
        router = Placement.create(client, config)
        await router.start()
        decision = await router.place(list(range(30)))
        await router.stop()
        await client.aclose()
        return decision

    decision = asyncio.run(main())
    assert decision.route == "colocated" and decision.prefill == []
