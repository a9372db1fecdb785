"""Admission control against a real Redis: tenant quotas shared across routers, priority queues."""

import asyncio

import pytest
import redis.asyncio as aioredis

from pdserve.config import AdmissionSpec
from pdserve.v1 import inference_pb2
from router.admission import Admission
from router.errors import Overloaded

INTERACTIVE, BATCH = inference_pb2.PRIORITY_INTERACTIVE, inference_pb2.PRIORITY_BATCH


def spec(**overrides) -> AdmissionSpec:
    base = {"max_concurrent": 2, "queue_limits": {"interactive": 2, "batch": 1}, "max_queue_wait_s": 5,
            "default_tenant": {"max_concurrent": 10, "tokens_per_second": 1000, "burst_tokens": 5000}}
    base.update(overrides)
    return AdmissionSpec.model_validate(base)


async def hold(admission, tenant, request_id, release: asyncio.Event, started: list, priority=INTERACTIVE, cost=10):
    async with admission.admit(tenant, priority, cost, request_id):
        started.append(request_id)
        await release.wait()


def test_tenant_concurrency_is_shared_by_two_routers(redis_url):
    async def main():
        clients = [aioredis.from_url(redis_url) for _ in range(2)]
        s = spec(default_tenant={"max_concurrent": 2, "tokens_per_second": 1e6, "burst_tokens": 10**6})
        routers = [Admission(c, "q", s, lease_s=60) for c in clients]
        release, started = asyncio.Event(), []
        tasks = [asyncio.create_task(hold(routers[i], "team", f"r{i}", release, started)) for i in range(2)]
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded, match="already has 2 requests running"):
            async with routers[0].admit("team", INTERACTIVE, 10, "r3"):
                pass
        async with routers[1].admit("other-team", INTERACTIVE, 10, "r4"):  # another tenant is unaffected
            pass
        release.set()
        await asyncio.gather(*tasks)
        async with routers[1].admit("team", INTERACTIVE, 10, "r5"):  # slots came back
            pass
        for c in clients:
            await c.aclose()
        return started

    assert sorted(asyncio.run(main())) == ["r0", "r1"]


def test_token_rate_refuses_at_once_and_refills(redis_url):
    async def main():
        client = aioredis.from_url(redis_url)
        admission = Admission(client, "rate", spec(default_tenant={"max_concurrent": 10, "tokens_per_second": 1000, "burst_tokens": 1500}), lease_s=60)
        async with admission.admit("t", INTERACTIVE, 1000, "a"):
            pass
        with pytest.raises(Overloaded, match="over its token rate; retry in 0.5"):
            async with admission.admit("t", INTERACTIVE, 1000, "b"):
                pass
        with pytest.raises(Overloaded, match="exceeds its burst"):
            async with admission.admit("t", INTERACTIVE, 2000, "c"):
                pass
        await asyncio.sleep(0.6)
        async with admission.admit("t", INTERACTIVE, 1000, "d"):
            pass
        await client.aclose()

    asyncio.run(main())


def test_interactive_waiters_go_before_batch_and_full_queues_refuse_at_once(redis_url):
    async def main():
        client = aioredis.from_url(redis_url)
        admission = Admission(client, "prio", spec(), lease_s=60)
        release, started = asyncio.Event(), []
        running = [asyncio.create_task(hold(admission, "t", f"run{i}", release, started)) for i in range(2)]
        await asyncio.sleep(0.1)
        batch_release, interactive_release = asyncio.Event(), asyncio.Event()
        waiting = [asyncio.create_task(hold(admission, "t", "batch", batch_release, started, priority=BATCH))]
        await asyncio.sleep(0.05)
        waiting.append(asyncio.create_task(hold(admission, "t", "inter", interactive_release, started)))
        await asyncio.sleep(0.05)
        assert admission.queued() == {"interactive": 1, "batch": 1}
        with pytest.raises(Overloaded, match="batch queue is full"):
            async with admission.admit("t", BATCH, 10, "batch2"):
                pass
        release.set()  # two slots free: interactive first, then batch
        await asyncio.gather(*running)
        await asyncio.sleep(0.05)
        order = started[2:]
        interactive_release.set()
        batch_release.set()
        await asyncio.gather(*waiting)
        await client.aclose()
        return order, admission.running

    order, running = asyncio.run(main())
    assert order == ["inter", "batch"]
    assert running == 0


def test_queue_wait_limit_refuses_instead_of_hanging(redis_url):
    async def main():
        client = aioredis.from_url(redis_url)
        admission = Admission(client, "wait", spec(max_concurrent=1, max_queue_wait_s=0.2), lease_s=60)
        release, started = asyncio.Event(), []
        holder = asyncio.create_task(hold(admission, "t", "holder", release, started))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="waited 0.2 s"):
            async with admission.admit("t", INTERACTIVE, 10, "late"):
                pass
        release.set()
        await holder
        await client.aclose()
        return admission.running, admission.queued()

    assert asyncio.run(main()) == (0, {"interactive": 0, "batch": 0})


def _unreachable_redis():
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return aioredis.from_url(f"redis://127.0.0.1:{port}/0")


def test_redis_outage_admits_on_router_limits_alone_by_default():
    async def main():
        client = _unreachable_redis()
        admission = Admission(client, "down", spec(max_concurrent=1, queue_limits={"interactive": 0, "batch": 0}), lease_s=60)
        release, started = asyncio.Event(), []
        first = asyncio.create_task(hold(admission, "t", "r1", release, started))
        while not started:
            await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="queue is full"):  # the router's own capacity still holds
            async with admission.admit("t", INTERACTIVE, 10, "r2"):
                pass
        release.set()
        await first
        await client.aclose()
        return admission.redis_bypasses, admission.running

    assert asyncio.run(main()) == (2, 0)


def test_redis_outage_is_unavailable_when_configured_to_refuse():
    from router.errors import Unavailable

    async def main():
        client = _unreachable_redis()
        admission = Admission(client, "down", spec(on_redis_error="refuse"), lease_s=60)
        with pytest.raises(Unavailable, match="Redis"):
            async with admission.admit("t", INTERACTIVE, 10, "r1"):
                pass
        await client.aclose()

    asyncio.run(main())
