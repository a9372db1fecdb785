"""The prefix index and load view against a real Redis."""

import asyncio

import redis.asyncio as aioredis

from router.load_view import LoadReporter, LoadView
from router.prefix_index import PrefixIndex


def run(coro_fn, url):
    async def main():
        client = aioredis.from_url(url)
        try:
            return await coro_fn(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def test_match_counts_leading_blocks_per_replica(redis_url):
    async def body(r):
        index = PrefixIndex(r, "t", "prefill")
        await index.record_stored("a", [1, 2, 3])
        await index.record_stored("b", [1, 2])
        await index.record_stored("c", [2, 3])  # holds later blocks but not the first: no prefix
        return await index.match([1, 2, 3, 4])

    assert run(body, redis_url) == {"a": 3, "b": 2}


def test_removed_blocks_end_the_prefix(redis_url):
    async def body(r):
        index = PrefixIndex(r, "t", "prefill")
        await index.record_stored("a", [1, 2, 3])
        await index.record_removed("a", [2])
        return await index.match([1, 2, 3])

    assert run(body, redis_url) == {"a": 1}


def test_clear_replica_forgets_only_that_replica(redis_url):
    async def body(r):
        index = PrefixIndex(r, "t", "decode")
        await index.record_stored("a", [1, 2])
        await index.record_stored("b", [1, 2])
        dropped = await index.clear_replica("a")
        return dropped, await index.match([1, 2]), await index.blocks_held("a")

    assert run(body, redis_url) == (2, {"b": 2}, 0)


def test_pools_and_namespaces_are_separate(redis_url):
    async def body(r):
        await PrefixIndex(r, "t", "prefill").record_stored("a", [1])
        return (await PrefixIndex(r, "t", "decode").match([1]), await PrefixIndex(r, "other", "prefill").match([1]))

    assert run(body, redis_url) == ({}, {})


def test_index_survives_a_new_client(redis_url):
    """A restarted router (a new client, nothing in memory) sees what was indexed before."""
    run(lambda r: PrefixIndex(r, "t", "prefill").record_stored("a", [7, 8]), redis_url)
    assert run(lambda r: PrefixIndex(r, "t", "prefill").match([7, 8]), redis_url) == {"a": 2}


def test_load_view_sees_reports_and_drops_expired_replicas(redis_url):
    figures = {"waiting": 2, "running": 3, "kv_cache_usage": 0.25}

    async def body(r):
        index = PrefixIndex(r, "t", "prefill")
        await index.record_stored("gone", [1])
        live = LoadReporter(r, "t", "prefill", "live", lambda: figures, ttl_s=5)
        gone = LoadReporter(r, "t", "prefill", "gone", lambda: figures, ttl_s=0.2)
        await live.report_once()
        await gone.report_once()
        view = LoadView(r, "t", "prefill", on_gone=index.clear_replica)
        first = set(await view.refresh())
        await asyncio.sleep(0.4)
        second = await view.refresh()
        return first, second, await index.match([1])

    first, second, match = run(body, redis_url)
    assert first == {"live", "gone"}
    assert set(second) == {"live"}
    assert (second["live"].waiting, second["live"].running, second["live"].kv_cache_usage) == (2, 3, 0.25)
    assert match == {}  # the lost replica's prefix entries went with it
