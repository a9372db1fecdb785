"""Each replica's live load, shared through Redis.

Replica side, `LoadReporter`: every `period_s`, writes its engine figures (all numeric ones) to
`{ns}:{pool}:load:{replica}` (a hash that expires after `ttl_s`) and adds itself to
`{ns}:{pool}:replicas`. Router side, `LoadView`: refreshes every replica's figures in one pipeline;
a replica whose hash expired is gone (dead or partitioned), and the router drops it and its prefix
index entries. Decisions read the in-memory view, never Redis directly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Callable

logger = logging.getLogger("pdserve.load_view")



@dataclass(slots=True)
class ReplicaLoad:
    replica: str
    waiting: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0
    reported_at: float = 0.0
    figures: dict[str, float] | None = None  # everything the replica reported (cache hits, transfers, ...)


class LoadReporter:
    def __init__(self, redis, namespace: str, pool: str, replica: str, figures: Callable[[], dict], period_s: float = 0.25, ttl_s: float = 2.0):
        self._redis, self._replica, self._figures = redis, replica, figures
        self._prefix = f"{namespace}:{pool}"
        self._period_s, self._ttl_ms = period_s, int(ttl_s * 1000)

    async def run(self) -> None:
        while True:
            try:
                await self.report_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis briefly away: keep serving, report again next period
                logger.warning("load report failed: %s", exc)
            await asyncio.sleep(self._period_s)

    async def report_once(self) -> None:
        figures = {k: v for k, v in self._figures().items() if isinstance(v, (int, float))}
        key = f"{self._prefix}:load:{self._replica}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.hset(key, mapping={**figures, "at": time.time()})
        pipe.pexpire(key, self._ttl_ms)
        pipe.sadd(f"{self._prefix}:replicas", self._replica)
        await pipe.execute()

    async def withdraw(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.delete(f"{self._prefix}:load:{self._replica}")
        pipe.srem(f"{self._prefix}:replicas", self._replica)
        await pipe.execute()


class LoadView:
    def __init__(self, redis, namespace: str, pool: str, on_gone: Callable[[str], object] | None = None):
        self._redis = redis
        self._prefix = f"{namespace}:{pool}"
        self._on_gone = on_gone
        self.replicas: dict[str, ReplicaLoad] = {}
        self.version = 0  # bumped on every refresh, so readers can cache what they derive

    async def refresh(self) -> dict[str, ReplicaLoad]:
        members = [_text(m) for m in await self._redis.smembers(f"{self._prefix}:replicas")]
        pipe = self._redis.pipeline(transaction=False)
        for replica in members:
            pipe.hgetall(f"{self._prefix}:load:{replica}")
        rows = await pipe.execute() if members else []
        fresh = {}
        for replica, row in zip(members, rows):
            if not row:
                await self._forget(replica)
                continue
            row = {_text(k): _text(v) for k, v in row.items()}
            fresh[replica] = ReplicaLoad(
                replica=replica,
                waiting=int(float(row.get("waiting", 0))),
                running=int(float(row.get("running", 0))),
                kv_cache_usage=float(row.get("kv_cache_usage", 0.0)),
                reported_at=float(row.get("at", 0.0)),
                figures={k: float(v) for k, v in row.items()},
            )
        self.replicas = fresh
        self.version += 1
        return fresh

    async def run(self, period_s: float = 0.25) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("load view refresh failed: %s", exc)
            await asyncio.sleep(period_s)

    async def _forget(self, replica: str) -> None:
        await self._redis.srem(f"{self._prefix}:replicas", replica)
        if self._on_gone is not None:
            result = self._on_gone(replica)
            if asyncio.iscoroutine(result):
                await result


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
