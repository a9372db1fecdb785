"""Latency of one routing decision: 64 replicas per pool, 10,000 indexed blocks, a real Redis.

A decision is what the router does per request before any engine sees it: hash the prompt's
blocks (every prompt has a shared prefix and a never-seen suffix), look the chain up in both pools'
prefix indexes (one Lua call), score
every live replica with the configured profiles, and decide. Printed: p50/p90/p99 of the whole
decision and of its parts (hashing alone, scheduling alone) for two block sizes. Target: p99 < 1 ms.

    python benchmarks/bench_routing_decision.py [--decisions 3000] [--replicas 64] [--blocks 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time

import redis.asyncio as aioredis

from pdserve.config import ClusterConfig
from pdserve.redis_server import RedisServer
from router.block_hashing import BlockHasher
from router.load_view import LoadReporter
from router.placement import Placement
from router.prefix_index import PrefixIndex
from router.scheduling.types import RequestView


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def fmt(values: list[float]) -> str:
    return "  ".join(f"p{int(q * 100)} {1000 * pct(values, q):6.3f} ms" for q in (0.5, 0.9, 0.99))


async def populate(r, namespace: str, replicas: int, blocks: int, block_size: int, prompt_tokens: int, rng: random.Random):
    """`blocks` indexed blocks: families of shared prefixes, each held by 2 replicas of each pool."""
    hasher = BlockHasher(block_size)
    blocks_per_family = prompt_tokens // block_size // 2  # half a prompt is a shared system prompt
    families = []
    for pool in ("prefill", "decode"):
        index = PrefixIndex(r, namespace, pool)
        for i in range(replicas):
            figures = {"waiting": rng.randint(0, 4), "running": rng.randint(0, 16), "kv_cache_usage": rng.random() * 0.8}
            await LoadReporter(r, namespace, pool, f"{pool}-{i:02d}", lambda f=figures: f, ttl_s=600).report_once()
        indexed = 0
        family = 0
        while indexed < blocks // 2:
            tokens = [rng.randrange(49152) for _ in range(blocks_per_family * block_size)]
            chain = hasher.chain(tokens)
            for holder in rng.sample(range(replicas), 2):
                await index.record_stored(f"{pool}-{holder:02d}", chain)
            if pool == "prefill":
                families.append(tokens)
            indexed += len(chain)
            family += 1
    return families


async def run(args, block_size: int) -> None:
    rng = random.Random(7)
    with RedisServer() as server:
        r = aioredis.from_url(server.url)
        config = ClusterConfig.model_validate(
            {"redis": {"url": server.url, "namespace": "bench"}, "prefill": {"engine": {"block_size": block_size}},
             "decode": {"engine": {"block_size": block_size}}}
        )
        families = await populate(r, "bench", args.replicas, args.blocks, block_size, args.prompt_tokens, rng)
        placement = Placement.create(r, config)
        await placement.start(period_s=3600)
        def new_prompt():
            """A known shared prefix (a system prompt) and a suffix never seen before."""
            prefix = rng.choice(families)
            return prefix + [rng.randrange(49152) for _ in range(args.prompt_tokens - len(prefix))]

        prompts = [new_prompt() for _ in range(args.decisions + 50)]
        for p in prompts[-50:]:  # warm-up (script loading, connections)
            await placement.place(p)
        total, hashing, scheduling = [], [], []
        hasher = BlockHasher(block_size)
        for i in range(args.decisions):
            tokens = prompts[i]
            t0 = time.perf_counter()
            decision = await placement.place(tokens)
            total.append(time.perf_counter() - t0)
            t1 = time.perf_counter()
            hashes = hasher.chain(tokens)  # a second hasher: its cache is as warm as the router's
            hashing.append(time.perf_counter() - t1)
            views = (placement._views("prefill", {}), placement._views("decode", {}))
            request = RequestView(len(tokens), hashes, block_size)
            t2 = time.perf_counter()
            placement.scheduler.schedule(request, *views)
            scheduling.append(time.perf_counter() - t2)
        assert decision.prefill_matched_blocks > 0, "the benchmark's prompts should hit the index"
        await placement.stop()
        await r.aclose()
    n_blocks = args.prompt_tokens // block_size
    print(f"block size {block_size:>3} ({n_blocks} blocks per {args.prompt_tokens}-token prompt), "
          f"{args.replicas} replicas per pool, {args.blocks} indexed blocks, {args.decisions} decisions")
    print(f"  whole decision   {fmt(total)}")
    print(f"  hashing only     {fmt(hashing)}")
    print(f"  scheduling only  {fmt(scheduling)}")
    print(f"  => p99 {'under' if pct(total, 0.99) < 1e-3 else 'OVER'} 1 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=3000)
    parser.add_argument("--replicas", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=10_000)
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--block-sizes", default="128,16", help="CPU default 128, CUDA default 16")
    args = parser.parse_args()
    for block_size in [int(b) for b in args.block_sizes.split(",")]:
        asyncio.run(run(args, block_size))


if __name__ == "__main__":
    main()
