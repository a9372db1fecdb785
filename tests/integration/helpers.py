"""Small helpers the integration tests share: sending a request, reading the cluster's state."""

from __future__ import annotations

import time

from pdserve.client import make_request
from pdserve.v1 import inference_pb2

POOLS = {"prefill": "PrefillServer", "decode": "DecodeServer"}


def greedy(item: dict, request_id: str = "") -> inference_pb2.GenerateRequest:
    return make_request(item["prompt"], max_tokens=item["max_tokens"], temperature=0.0, request_id=request_id)


def route(client, request) -> tuple[list[int], str, inference_pb2.GenerateResponse]:
    """Every token id of one streamed request, the route it took, and its last message."""
    ids, taken, last = [], "", None
    for response in client.stream(request):
        taken = taken or response.route
        ids.extend(response.token_ids)
        last = response
    return ids, taken, last


def handle(cluster, pool: str):
    from ray import serve

    return serve.get_deployment_handle(POOLS[pool], app_name=cluster.config.name)


def wait_until_no_kv_blocks_held(cluster, timeout_s: float = 15.0) -> dict:
    """Poll both pools until neither engine holds a KV block; returns the last answer per pool."""
    handles = {pool: handle(cluster, pool) for pool in POOLS}
    deadline = time.monotonic() + timeout_s
    while True:
        free = {pool: h.holds_no_kv_blocks.remote().result(timeout_s=30) for pool, h in handles.items()}
        if all(free.values()) or time.monotonic() > deadline:
            return free
        time.sleep(0.5)


def wait_until_serving(client, timeout_s: float = 240.0) -> None:
    """Block until both pools report a healthy replica again (after a replica was killed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        health = client.health()
        if health.status == inference_pb2.HealthResponse.SERVING:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"cluster not serving after {timeout_s:g} s: {health}")
        time.sleep(1.0)
