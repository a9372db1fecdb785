"""Admission control: who may start now, who waits, who is refused at once.

    async with admission.admit(tenant, priority, cost_tokens, request_id):
        ...serve the request...

In order, each refusal an `Overloaded` (RESOURCE_EXHAUSTED) raised at once, never a time-out:
1. tenant token rate: a token bucket per tenant in Redis (prompt + max_tokens per request), shared
   by every router replica;
2. tenant concurrency: a sorted set of the tenant's running request ids in Redis, each entry a
   lease that expires on its own if a router dies mid-request;
3. router capacity: `max_concurrent` requests run at once per router replica; the rest wait in
   their priority class's queue (interactive before batch), refused when that queue is full or
   after `max_queue_wait_s`.
If Redis does not answer steps 1-2 within `redis_timeout_s`, `on_redis_error` decides: "admit"
(the default: serving goes on under step 3's limits alone, each bypass counted) or "refuse"
(UNAVAILABLE). A tenant slot that cannot be released expires with its lease.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

from pdserve.config import AdmissionSpec
from pdserve.v1 import inference_pb2
from router.errors import Overloaded, Unavailable

logger = logging.getLogger("pdserve.admission")

INTERACTIVE, BATCH = "interactive", "batch"
PRIORITY_CLASSES = (INTERACTIVE, BATCH)  # served in this order

# KEYS[1] bucket. ARGV: rate/s, burst, cost, now. Returns {allowed 0/1, seconds until it would be}.
_TOKEN_BUCKET_LUA = """
local rate, burst, cost, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""

# KEYS[1] running set. ARGV: limit, request id, now, lease seconds. Returns 1 if admitted.
_CONCURRENCY_LUA = """
local limit, id, now, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - lease)
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now, id)
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""


def priority_class(priority: int) -> str:
    return BATCH if priority == inference_pb2.PRIORITY_BATCH else INTERACTIVE


class Admission:
    def __init__(self, redis, namespace: str, spec: AdmissionSpec, lease_s: float, on_bypass=None):
        self._redis, self._spec, self._lease_s = redis, spec, lease_s
        self._on_bypass = on_bypass  # called once per request admitted without the tenant checks
        self._prefix = f"{namespace}:tenant"
        self._bucket = redis.register_script(_TOKEN_BUCKET_LUA)
        self._concurrency = redis.register_script(_CONCURRENCY_LUA)
        self.running = 0
        self.queues: dict[str, deque[asyncio.Future]] = {c: deque() for c in PRIORITY_CLASSES}
        self.redis_bypasses = 0  # requests admitted without the tenant checks (Redis did not answer)

    @asynccontextmanager
    async def admit(self, tenant: str, priority: int, cost_tokens: int, request_id: str) -> AsyncIterator[None]:
        tenant = tenant or "default"
        holds_tenant_slot = await self._tenant_checks(tenant, cost_tokens, request_id)
        try:
            await self._take_router_slot(priority_class(priority))
            try:
                yield
            finally:
                self._release_router_slot()
        finally:
            if holds_tenant_slot:
                try:
                    await asyncio.wait_for(self._redis.zrem(f"{self._prefix}:{tenant}:running", request_id), self._spec.redis_timeout_s)
                except Exception as exc:  # the entry's lease ends it
                    logger.warning("tenant slot of %s not released (%s); its lease ends it", request_id, exc)

    async def _tenant_checks(self, tenant: str, cost_tokens: int, request_id: str) -> bool:
        """Steps 1 and 2; True when a tenant slot is held (False when Redis was bypassed)."""
        try:
            await asyncio.wait_for(self._charge_rate(tenant, cost_tokens), self._spec.redis_timeout_s)
            await asyncio.wait_for(self._take_tenant_slot(tenant, request_id), self._spec.redis_timeout_s)
            return True
        except Overloaded:
            raise
        except Exception as exc:  # Redis refused, timed out or went away
            if self._spec.on_redis_error == "refuse":
                raise Unavailable(f"admission state (Redis) unavailable: {type(exc).__name__}") from exc
            self.redis_bypasses += 1
            if self._on_bypass is not None:
                self._on_bypass()
            logger.warning("admission: Redis unavailable (%s: %s); admitting %s on router limits alone",
                           type(exc).__name__, exc, request_id)
            return False

    async def _charge_rate(self, tenant: str, cost: int) -> None:
        limits = self._spec.limits_for(tenant)
        if cost > limits.burst_tokens:
            raise Overloaded(f"tenant {tenant!r}: a request of {cost} tokens exceeds its burst of {limits.burst_tokens}")
        allowed, wait = await self._bucket(
            keys=[f"{self._prefix}:{tenant}:bucket"], args=[limits.tokens_per_second, limits.burst_tokens, cost, time.time()]
        )
        if not int(allowed):
            raise Overloaded(f"tenant {tenant!r} is over its token rate; retry in {float(wait):.1f} s")

    async def _take_tenant_slot(self, tenant: str, request_id: str) -> None:
        limit = self._spec.limits_for(tenant).max_concurrent
        ok = await self._concurrency(
            keys=[f"{self._prefix}:{tenant}:running"], args=[limit, request_id, time.time(), self._lease_s]
        )
        if not int(ok):
            raise Overloaded(f"tenant {tenant!r} already has {limit} requests running")

    async def _take_router_slot(self, klass: str) -> None:
        if self.running < self._spec.max_concurrent and not any(self.queues.values()):
            self.running += 1
            return
        queue = self.queues[klass]
        if len(queue) >= self._spec.queue_limits.get(klass, 0):
            raise Overloaded(f"router is at capacity and its {klass} queue is full ({len(queue)} waiting)")
        waiter = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), self._spec.max_queue_wait_s)
        except asyncio.TimeoutError:
            if waiter.done():  # the slot arrived as the wait ended: hand it on
                self._release_router_slot()
            else:
                queue.remove(waiter)
            raise Overloaded(f"waited {self._spec.max_queue_wait_s:g} s in the {klass} queue") from None
        except asyncio.CancelledError:
            if waiter.done():
                self._release_router_slot()
            elif waiter in queue:
                queue.remove(waiter)
            raise

    def _release_router_slot(self) -> None:
        for klass in PRIORITY_CLASSES:  # the slot passes straight to the highest-priority waiter
            queue = self.queues[klass]
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self.running -= 1

    def queued(self) -> dict[str, int]:
        return {k: len(q) for k, q in self.queues.items()}
