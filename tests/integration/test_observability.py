"""Traces across the hops and Prometheus metrics, from the real cluster."""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from pdserve.client import make_request
from tests.integration import helpers
from tests.integration.conftest import PROMPTS

pytestmark = pytest.mark.integration


def _spans(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_one_trace_follows_a_request_through_router_prefill_and_decode(client, cluster):
    request_id = f"traced-{time.time_ns()}"
    prompt = f"Trace me {request_id}: " + PROMPTS[-1]["prompt"]
    ids, route, _ = helpers.route(client, make_request(prompt, max_tokens=6, temperature=0.0, request_id=request_id))
    assert route == "disaggregated"
    path = Path(cluster.config.observability.tracing.file_path)
    wanted = {"pdserve.request", "pdserve.place", "pdserve.prefill_call", "pdserve.prefill", "pdserve.decode_call", "pdserve.decode"}
    deadline = time.monotonic() + 20  # each process flushes its batch every 500 ms
    while True:
        spans = _spans(path)
        roots = [s for s in spans if s["name"] == "pdserve.request" and s["attributes"].get("pdserve.request_id") == request_id]
        trace = [s for s in spans if roots and s["context"]["trace_id"] == roots[0]["context"]["trace_id"]]
        if wanted <= {s["name"] for s in trace} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_name = {s["name"]: s for s in trace}
    assert wanted <= set(by_name), f"spans of the trace: {sorted(by_name)}"
    root = by_name["pdserve.request"]
    # Parent links cross the process boundaries through the messages' trace_context.
    assert by_name["pdserve.place"]["parent_id"] == root["context"]["span_id"]
    assert by_name["pdserve.prefill_call"]["parent_id"] == root["context"]["span_id"]
    assert by_name["pdserve.prefill"]["parent_id"] == by_name["pdserve.prefill_call"]["context"]["span_id"]
    assert by_name["pdserve.decode"]["parent_id"] == by_name["pdserve.decode_call"]["context"]["span_id"]
    services = {name: by_name[name]["resource"]["attributes"]["service.name"] for name in ("pdserve.request", "pdserve.prefill", "pdserve.decode")}
    assert services == {"pdserve.request": "pdserve-router", "pdserve.prefill": "pdserve-prefill", "pdserve.decode": "pdserve-decode"}
    assert root["attributes"]["pdserve.outcome"] == "ok" and root["attributes"]["pdserve.route"] == "disaggregated"
    assert root["attributes"]["pdserve.completion_tokens"] == len(ids)
    assert by_name["pdserve.prefill"]["attributes"]["pdserve.kv_blocks_held"] >= 1
    assert by_name["pdserve.decode"]["attributes"]["pdserve.kv_pull"] is True


def _scrape(address: str) -> str:
    with urllib.request.urlopen(address, timeout=10) as response:
        return response.read().decode()


def _value(text: str, metric: str, **labels) -> float:
    """Sum of the samples of `metric` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[: line.rindex("}")]))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_prometheus_endpoint_has_latency_cache_and_transfer_metrics(client, cluster):
    assert cluster.metrics_address.startswith("http://127.0.0.1:")
    prompt = f"Metrics {time.time_ns()}: " + PROMPTS[-1]["prompt"]
    helpers.route(client, make_request(prompt, max_tokens=8, temperature=0.0))
    expected = {
        ("ray_pdserve_ttft_seconds_count", (("route", "disaggregated"),)),
        ("ray_pdserve_inter_token_seconds_count", (("route", "disaggregated"),)),
        ("ray_pdserve_queue_seconds_count", (("priority", "interactive"),)),
        ("ray_pdserve_requests_total", (("outcome", "ok"),)),
        ("ray_pdserve_completion_tokens_total", ()),
        ("ray_pdserve_engine_prefix_cache_queries_total", (("pool", "prefill"),)),
        ("ray_pdserve_kv_transfers_total", (("pool", "decode"),)),
        ("ray_pdserve_kv_transfer_bytes_total", (("pool", "decode"),)),
        ("ray_pdserve_kv_transfer_seconds_total", (("pool", "decode"),)),
        ("ray_pdserve_engine_prompt_tokens_total", (("pool", "decode"), ("source", "kv_transfer"))),
    }
    deadline = time.monotonic() + 60  # Ray's metrics agent collects from the replicas every few seconds
    while True:
        text = _scrape(cluster.metrics_address)
        missing = {m for m, labels in expected if _value(text, m, **dict(labels)) <= 0}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert not missing, f"not exported (or zero): {sorted(missing)}"
    # Every sample carries the Serve replica it came from.
    assert re.search(r'ray_pdserve_ttft_seconds_bucket\{[^}]*deployment="Router"', text)
    assert 'application="pdserve-test"' in text
