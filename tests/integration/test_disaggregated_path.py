"""The disaggregated request path against the real cluster (Ray, two vLLM engines, NIXL)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from pdserve.client import make_request
from pdserve.v1 import inference_pb2
from tests.integration.conftest import PROMPTS
from tests.integration import helpers

pytestmark = pytest.mark.integration


def test_greedy_tokens_equal_a_single_colocated_engine(client, reference_tokens, test_config):
    threshold = test_config.router.scheduling.min_uncached_tokens_to_disaggregate
    routes = []
    for i, (item, expected) in enumerate(zip(PROMPTS, reference_tokens)):
        ids, route, last = helpers.route(client, helpers.greedy(item, request_id=f"equal-{i}"))
        assert ids == expected, f"prompt {i} ({route}): {ids} != {expected}"
        assert last.usage.completion_tokens == len(ids)
        expected_route = "disaggregated" if last.usage.prompt_tokens >= threshold else "colocated"
        assert route == expected_route, f"prompt {i} has {last.usage.prompt_tokens} tokens"
        routes.append((route, last.usage.prompt_tokens))
    assert sum(r == "disaggregated" for r, _ in routes) >= 3
    assert max(n for _, n in routes) > 6 * 128, "one prompt must span many KV blocks"


def test_decode_pulls_the_kv_instead_of_recomputing(client, decode_figures):
    # A prompt neither engine has seen: its first block differs from every earlier prompt's.
    item = {"prompt": f"Fresh log {time.time_ns()}: " + PROMPTS[-1]["prompt"], "max_tokens": 4}
    before = decode_figures()
    ids, route, last = helpers.route(client, helpers.greedy(item, request_id="pull-check"))
    after = decode_figures()
    assert route == "disaggregated"
    pulled = after["prompt_tokens_kv_transfer"] - before["prompt_tokens_kv_transfer"]
    computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    assert after["transfers"] > before["transfers"]
    assert after["transfer_bytes"] > before["transfer_bytes"]
    # Decode recomputes at most the last, partial block; the rest arrived over NIXL.
    assert pulled >= last.usage.prompt_tokens - 128, (pulled, computed, last.usage.prompt_tokens)
    assert computed < 128
    assert after["transfer_failures"] == before["transfer_failures"]


def test_tokens_arrive_incrementally(client):
    request = make_request(PROMPTS[2]["prompt"], max_tokens=48, temperature=0.0)
    request.stop[:] = []
    started = time.perf_counter()
    arrivals = []
    for response in client.stream(request):
        arrivals.append((time.perf_counter() - started, len(response.token_ids)))
    total_tokens = sum(n for _, n in arrivals)
    assert total_tokens > 20, "the model stopped too early for this check"
    assert len(arrivals) >= total_tokens // 3, f"{len(arrivals)} messages for {total_tokens} tokens"
    first, last = arrivals[0][0], arrivals[-1][0]
    # Tokens are spread over the generation, not delivered at the end in a burst.
    assert last - first > 0.3 * last, arrivals


def test_eight_concurrent_requests_all_complete_with_the_right_tokens(client, reference_tokens):
    jobs = [(i % len(PROMPTS), f"conc-{i}") for i in range(8)]

    def run(job):
        index, request_id = job
        ids, _, last = helpers.route(client, helpers.greedy(PROMPTS[index], request_id=request_id))
        return index, ids, last

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, jobs))
    assert len(results) == 8
    for index, ids, last in results:
        assert last.finish_reason != inference_pb2.FINISH_REASON_UNSPECIFIED
        assert ids == reference_tokens[index], f"prompt {index}"


def test_chat_request_is_rendered_with_the_template(client):
    text = "".join(r.text for r in client.stream(make_request(chat=[("user", "What is the capital of France?")], max_tokens=12)))
    assert "Paris" in text


@pytest.mark.parametrize(
    "request_factory, fragment",
    [
        (lambda: inference_pb2.GenerateRequest(max_tokens=4), "prompt"),
        (lambda: make_request("hi", max_tokens=0), "max_tokens"),
        (lambda: make_request("hi", max_tokens=4, temperature=7.0), "temperature"),
        (lambda: make_request("hi", max_tokens=4, top_p=0.0), "top_p"),
        (lambda: make_request("word " * 3000, max_tokens=4), "tokens"),
        (lambda: make_request(chat=[("robot", "hi")], max_tokens=4), "role"),
    ],
)
def test_bad_requests_get_invalid_argument(client, request_factory, fragment):
    with pytest.raises(grpc.RpcError) as info:
        list(client.stream(request_factory()))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in info.value.details()


def test_health_reports_both_pools(client):
    health = client.health()
    assert health.status == inference_pb2.HealthResponse.SERVING
    assert {p.pool: p.healthy_replicas for p in health.pools} == {"prefill": 1, "decode": 1}


def test_standard_grpc_health_check_is_served(cluster):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(cluster.grpc_address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 15
        while True:
            status = stub.Check(health_pb2.HealthCheckRequest(service="pdserve.v1.Inference"), timeout=5).status
            if status == health_pb2.HealthCheckResponse.SERVING or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_no_kv_block_is_held_after_requests_finish(client, cluster):
    for i, item in enumerate(PROMPTS):
        helpers.route(client, helpers.greedy(item, request_id=f"leak-{i}"))
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}


def test_cancelled_request_frees_its_blocks_on_both_pools(client, cluster, decode_figures):
    request = make_request(f"Cancel me {time.time_ns()}: " + PROMPTS[-1]["prompt"], max_tokens=400, temperature=0.0)
    stream = client.stream(request)
    first = next(stream)
    assert first.route == "disaggregated"
    next(stream)
    stream.cancel()
    deadline = time.monotonic() + 10
    while decode_figures()["unfinished_requests"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert decode_figures()["unfinished_requests"] == 0
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}
    # The cluster still serves afterwards.
    ids, _, _ = helpers.route(client, helpers.greedy(PROMPTS[0]))
    assert ids


def test_engine_kv_events_feed_the_prefix_index_the_router_reads(client, cluster):
    """The router hashes prompts exactly as the engines do: after one request, the router's dry-run
    placement of the same prompt finds every full block on the prefill replica that served it."""
    from ray import serve

    prompt = f"Index check {time.time_ns()}: " + PROMPTS[-1]["prompt"]
    router = serve.get_deployment_handle("Router", app_name=cluster.config.name)
    before = router.placement_snapshot.remote(prompt).result(timeout_s=30)
    assert before["prefill_matched_blocks"] == 0
    ids, route, last = helpers.route(client, make_request(prompt, max_tokens=2, temperature=0.0))
    assert route == "disaggregated"
    full_blocks = last.usage.prompt_tokens // cluster.config.block_size
    deadline = time.monotonic() + 10
    while True:
        after = router.placement_snapshot.remote(prompt).result(timeout_s=30)
        if after["prefill_matched_blocks"] == full_blocks or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert after["prefill_matched_blocks"] == full_blocks
    # Decode pulled the same blocks and cached them; a repeat is served by decode alone unless the
    # uncached tail (the partial last block) is still long enough to be worth a prefill hop.
    assert after["decode_matched_blocks"] == full_blocks
    tail = last.usage.prompt_tokens - full_blocks * cluster.config.block_size
    threshold = cluster.config.router.scheduling.min_uncached_tokens_to_disaggregate
    assert after["route"] == ("colocated" if tail < threshold else "disaggregated")


def test_tenant_over_quota_is_refused_at_once_with_resource_exhausted(client):
    # About 8 prompt tokens + 20 max_tokens = 28 of the tenant's 40-token burst (refill 1 token/s):
    # the first fits, an identical second right after does not.
    tiny = make_request("Hello there, how are you today?", max_tokens=20, tenant="tiny")
    assert list(client.stream(tiny))
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as info:
        list(client.stream(tiny))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "token rate" in info.value.details()
    assert time.perf_counter() - started < 2.0  # refused, not timed out
    # Other tenants are not affected.
    assert list(client.stream(make_request("Hello there", max_tokens=2, tenant="someone-else")))


def test_every_server_the_cluster_started_listens_on_loopback_only(cluster):
    """Ray's daemons, Serve's proxy, the router, the engines' NIXL side channels, Redis: every
    listening socket of this process's descendants is bound to 127.0.0.1."""
    import os

    import psutil

    mine = {os.getpid()} | {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in mine]
    assert len(listening) > 10, "expected Ray, Serve, router, engines and Redis to be listening"
    exposed = [(c.laddr.ip, c.laddr.port, psutil.Process(c.pid).name()) for c in listening
               if c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
    assert not exposed, exposed


def test_first_token_that_ends_the_request_releases_prefill_blocks_before_the_lease(client, cluster, reference_tokens):
    """A stop string matching the first token: the answer ends at prefill, and decode's one-token
    pull frees the blocks prefill kept (else they would wait out the 30 s lease)."""
    from transformers import AutoTokenizer

    first_text = AutoTokenizer.from_pretrained(cluster.config.model.resolved_path()).decode([reference_tokens[-1][0]])
    request = helpers.greedy(PROMPTS[-1], request_id="ends-at-first-token")
    request.stop[:] = [first_text]
    ids, route, last = helpers.route(client, request)
    assert (route, ids) == ("disaggregated", [reference_tokens[-1][0]])
    assert last.finish_reason == inference_pb2.FINISH_REASON_STOP
    started = time.monotonic()
    assert helpers.wait_until_no_kv_blocks_held(cluster, timeout_s=10) == {"prefill": True, "decode": True}
    assert time.monotonic() - started < cluster.config.kv_transfer.lease_seconds / 2
