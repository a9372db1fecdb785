"""Placing one request: hash its blocks, look them up, score the live replicas, decide.

    placement = Placement.create(redis, config)     one per router replica
    await placement.start()                         load both pools' prefix index mirrors and load views
    decision = await placement.place(tokens, n)     memory only: hashing, index lookup, scoring
    with placement.track(decision): ...             this router's in-flight count per replica

The prefix index and the load views live in Redis (every replica reports there) and each router
mirrors them in memory, so every router replica sees the same replicas, loads and prefix index,
and ties break on replica id: two routers given the same prompt at the same moment place it the
same way. No decision waits on Redis; if Redis goes away, routing goes on from the last view.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import contextmanager

from pdserve.config import ClusterConfig, SchedulingSpec
from router.block_hashing import BlockHasher
from router.load_view import LoadView
from router.prefix_mirror import PrefixIndexMirror
from router.scheduling.decider import DisaggregationDecider
from router.scheduling.profile import SchedulingProfile
from router.scheduling.scheduler import Scheduler
from router.scheduling.types import Decision, ReplicaView, RequestView

POOLS = ("prefill", "decode")


class Placement:
    def __init__(self, redis, namespace: str, scheduler: Scheduler, block_size: int):
        self.hasher = BlockHasher(block_size)
        self.scheduler = scheduler
        self.mirrors = {pool: PrefixIndexMirror(redis, namespace, pool) for pool in POOLS}
        self.loads = {pool: LoadView(redis, namespace, pool, on_gone=self.mirrors[pool].index.clear_replica) for pool in POOLS}
        self.in_flight: Counter[str] = Counter()
        self._tasks: list[asyncio.Task] = []
        self._views_cache: dict[str, tuple[int, list[ReplicaView]]] = {}

    @classmethod
    def create(cls, redis, config: ClusterConfig) -> "Placement":
        return cls(redis, config.redis.namespace, build_scheduler(config.router.scheduling), config.block_size)

    def reconfigure(self, spec: SchedulingSpec) -> None:
        """Swap profiles and decider live; the index, load views and in-flight counts stay."""
        self.scheduler = build_scheduler(spec)

    async def start(self, period_s: float = 0.25) -> None:
        for mirror in self.mirrors.values():
            await mirror.start()
        for view in self.loads.values():
            await view.refresh()
            self._tasks.append(asyncio.get_running_loop().create_task(view.run(period_s)))

    async def stop(self) -> None:
        for mirror in self.mirrors.values():
            await mirror.stop()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3.0)
        self._tasks = []

    async def place(self, token_ids: list[int], max_tokens: int = 0) -> Decision:
        hashes = self.hasher.chain(token_ids)
        request = RequestView(len(token_ids), hashes, self.hasher.block_size, max_tokens)
        return self.scheduler.schedule(
            request,
            self._views("prefill", self.mirrors["prefill"].match(hashes)),
            self._views("decode", self.mirrors["decode"].match(hashes)),
        )

    def _views(self, pool: str, matches: dict[str, int]) -> list[ReplicaView]:
        """The pool's replicas for one decision. Load fields change only when the load view
        refreshes, so the objects are built once per refresh and only the per-decision fields are
        set here; `place` reads them synchronously, before the next decision can run."""
        view = self.loads[pool]
        cached = self._views_cache.get(pool)
        if cached is None or cached[0] != view.version:
            views = [ReplicaView(l.replica, l.waiting, l.running, l.kv_cache_usage) for l in view.replicas.values()]
            cached = self._views_cache[pool] = (view.version, views)
        in_flight, held = self.in_flight, self.mirrors[pool].held
        for v in cached[1]:
            v.in_flight = in_flight.get(v.replica, 0)
            v.matched_blocks = matches.get(v.replica, 0)
            v.held_blocks = len(held.get(v.replica, ()))
        return cached[1]

    @contextmanager
    def track(self, *replicas: str):
        """Count a request against the replicas it was sent to until it ends."""
        for r in replicas:
            self.in_flight[r] += 1
        try:
            yield
        finally:
            for r in replicas:
                self.in_flight[r] -= 1
                if self.in_flight[r] <= 0:
                    del self.in_flight[r]


def build_scheduler(spec: SchedulingSpec) -> Scheduler:
    return Scheduler(
        prefill=SchedulingProfile.from_spec("prefill", spec.prefill),
        decode=SchedulingProfile.from_spec("decode", spec.decode),
        decider=DisaggregationDecider(spec.min_uncached_tokens_to_disaggregate),
    )
