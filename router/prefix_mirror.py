"""A router's in-memory mirror of one pool's Redis prefix index: the hot path reads memory.

    mirror = PrefixIndexMirror(redis, namespace, pool)
    await mirror.start()          subscribe to the index's change channel, then load a snapshot
    mirror.match(hashes)          leading blocks per replica, no I/O
Redis stays the source of truth, shared by every router and kept across router restarts. Changes
arrive over pub/sub; while a snapshot loads they are buffered and replayed after it in order (set
adds and removes are idempotent, so replaying one the snapshot already holds is harmless). A full
resync every `resync_s`, and after any lost connection, bounds what a dropped message can cost:
a missed hit, never a wrong replica for long.
"""

from __future__ import annotations

import asyncio
import logging

from router.prefix_index import PrefixIndex, parse_change

logger = logging.getLogger("pdserve.prefix_mirror")


class PrefixIndexMirror:
    def __init__(self, redis, namespace: str, pool: str, resync_s: float = 30.0):
        self._redis = redis
        self.index = PrefixIndex(redis, namespace, pool)
        self.resync_s = resync_s
        self.blocks: dict[int, set[str]] = {}
        self.held: dict[str, set[int]] = {}
        self._buffer: list[str] | None = None
        self._task: asyncio.Task | None = None
        self._stopping = False
        self.resyncs = 0

    def match(self, hashes) -> dict[str, int]:
        counts: dict[str, int] = {}
        alive: set[str] | None = None
        for depth, h in enumerate(hashes, start=1):
            holders = self.blocks.get(h)
            if not holders:
                break
            alive = set(holders) if alive is None else alive & holders
            if not alive:
                break
            for r in alive:
                counts[r] = depth
        return counts

    def apply(self, message: str) -> None:
        if self._buffer is not None:
            self._buffer.append(message)
            return
        op, replica, hashes = parse_change(message)
        if op == "+":
            held = self.held.setdefault(replica, set())
            for h in hashes:
                self.blocks.setdefault(h, set()).add(replica)
                held.add(h)
        elif op == "-":
            held = self.held.get(replica, set())
            for h in hashes:
                self._drop(h, replica)
                held.discard(h)
        elif op == "!":
            for h in self.held.pop(replica, set()):
                self._drop(h, replica)

    def _drop(self, h: int, replica: str) -> None:
        holders = self.blocks.get(h)
        if holders is not None:
            holders.discard(replica)
            if not holders:
                del self.blocks[h]

    async def resync(self) -> None:
        self._buffer = []
        try:
            snapshot = await self.index.snapshot()
        except BaseException:
            buffered, self._buffer = self._buffer, None
            for message in buffered:
                self.apply(message)
            raise
        blocks: dict[int, set[str]] = {}
        for replica, hashes in snapshot.items():
            for h in hashes:
                blocks.setdefault(h, set()).add(replica)
        self.blocks, self.held = blocks, snapshot
        buffered, self._buffer = self._buffer, None
        for message in buffered:
            self.apply(message)
        self.resyncs += 1

    async def start(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.index.channel)
        await self.resync()
        self._task = asyncio.get_running_loop().create_task(self._follow(pubsub))

    async def stop(self) -> None:
        # A flag as well as a cancel: redis-py's timed reads can swallow a cancellation.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=3.0)
            self._task = None

    async def _follow(self, pubsub) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_s
        while not self._stopping:
            try:
                message = await pubsub.get_message(timeout=0.25)
                if message is not None:
                    data = message["data"]
                    self.apply(data.decode() if isinstance(data, bytes) else data)
                if loop.time() >= next_resync:
                    await self.resync()
                    next_resync = loop.time() + self.resync_s
            except asyncio.CancelledError:
                break
            except Exception as exc:  # Redis away: keep routing from what we have, resync when back
                if self._stopping:
                    break
                logger.warning("prefix mirror of %s lost Redis (%s); retrying", self.index.prefix, exc)
                await asyncio.sleep(1.0)
                try:
                    await pubsub.subscribe(self.index.channel)
                    await self.resync()
                except Exception:
                    continue
        try:
            await pubsub.aclose()
        except Exception:
            pass
