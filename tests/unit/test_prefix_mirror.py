"""The router's in-memory mirror against the Redis index it mirrors (a real Redis)."""

import asyncio
import random

import redis.asyncio as aioredis

from router.prefix_index import PrefixIndex, change
from router.prefix_mirror import PrefixIndexMirror


async def settle(mirror, expected_check, timeout=3.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not expected_check() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)


def test_mirror_answers_exactly_like_the_redis_index(redis_url):
    rng = random.Random(3)

    async def main():
        r = aioredis.from_url(redis_url)
        index = PrefixIndex(r, "m", "prefill")
        chains = [[rng.getrandbits(63) for _ in range(8)] for _ in range(30)]
        for chain in chains[:10]:  # indexed before the mirror starts: comes from the snapshot
            await index.record_stored(f"r{rng.randrange(4)}", chain[: rng.randint(1, 8)])
        mirror = PrefixIndexMirror(r, "m", "prefill")
        await mirror.start()
        for chain in chains[10:]:  # after: comes over the change channel
            await index.record_stored(f"r{rng.randrange(4)}", chain[: rng.randint(1, 8)])
        await index.record_removed("r1", [h for c in chains for h in c[3:5]])
        await index.clear_replica("r2")
        probes = [c[: rng.randint(1, 8)] + [rng.getrandbits(63)] for c in chains]
        await settle(mirror, lambda: all(mirror.match(p) is not None for p in probes))
        await asyncio.sleep(0.3)
        expected = [await index.match(p) for p in probes]
        got = [mirror.match(p) for p in probes]
        await mirror.stop()
        await r.aclose()
        return expected, got

    expected, got = asyncio.run(main())
    assert got == expected
    assert any(expected), "the probes should hit something"


def test_changes_during_a_snapshot_are_replayed_in_order():
    mirror = PrefixIndexMirror.__new__(PrefixIndexMirror)
    mirror.blocks, mirror.held, mirror._buffer = {1: {"a"}}, {"a": {1}}, []
    mirror.apply(change("-", "a", [1]))
    mirror.apply(change("+", "b", [1, 2]))
    assert mirror.blocks == {1: {"a"}}  # buffered, not applied yet
    buffered, mirror._buffer = mirror._buffer, None
    for message in buffered:
        mirror.apply(message)
    assert mirror.blocks == {1: {"b"}, 2: {"b"}}
    assert mirror.match([1, 2, 3]) == {"b": 2}


def test_replica_cleared_everywhere():
    mirror = PrefixIndexMirror.__new__(PrefixIndexMirror)
    mirror.blocks, mirror.held, mirror._buffer = {}, {}, None
    mirror.apply(change("+", "a", [1, 2]))
    mirror.apply(change("+", "b", [1]))
    mirror.apply(change("!", "a", []))
    assert mirror.blocks == {1: {"b"}}
    assert mirror.match([1, 2]) == {"b": 1}


def test_new_router_mirror_sees_what_was_indexed_before_it_started(redis_url):
    async def main():
        r = aioredis.from_url(redis_url)
        await PrefixIndex(r, "m2", "decode").record_stored("d1", [5, 6, 7])
        mirror = PrefixIndexMirror(r, "m2", "decode")
        await mirror.start()
        result = mirror.match([5, 6, 7, 8])
        await mirror.stop()
        await r.aclose()
        return result

    assert asyncio.run(main()) == {"d1": 3}
