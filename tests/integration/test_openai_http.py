"""The OpenAI-compatible HTTP API against the real cluster, through Ray Serve's HTTP proxy."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from pdserve.client import make_request
from tests.integration import helpers
from tests.integration.conftest import PROMPTS

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http(cluster):
    with httpx.Client(base_url=cluster.http_address, timeout=120) as client:
        deadline = time.monotonic() + 60
        while client.get("/health").status_code != 200:  # the proxy may take a moment after start-up
            assert time.monotonic() < deadline, "HTTP health never became 200"
            time.sleep(0.5)
        yield client


def _sse(response: httpx.Response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def test_models_lists_the_served_model(http, cluster):
    body = http.get("/v1/models").json()
    assert [m["id"] for m in body["data"]] == [cluster.config.model.served_name]


def test_completion_matches_the_grpc_answer(http, client):
    item = PROMPTS[-1]  # long: disaggregated
    grpc_text, _, _ = client.complete(make_request(item["prompt"], max_tokens=item["max_tokens"], temperature=0.0))
    response = http.post("/v1/completions", json={"model": "smollm2-135m-instruct", "prompt": item["prompt"],
                                                  "max_tokens": item["max_tokens"], "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == grpc_text
    assert body["choices"][0]["finish_reason"] in ("length", "stop")
    assert body["usage"]["completion_tokens"] == item["max_tokens"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert response.headers["x-pdserve-route"] == "disaggregated"
    assert body["id"] == f"cmpl-{response.headers['x-request-id']}"


def test_streamed_completion_arrives_as_server_sent_events(http):
    item = PROMPTS[2]
    payload = {"prompt": item["prompt"], "max_tokens": 24, "temperature": 0, "stream": True,
               "stream_options": {"include_usage": True}}
    whole = http.post("/v1/completions", json={**payload, "stream": False}).json()
    with http.stream("POST", "/v1/completions", json=payload, headers={"X-Request-Id": "sse-check"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-request-id"] == "sse-check"
        events = _sse(response)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert len(chunks) > 3, "tokens arrive as several events, not one"
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")
    assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == whole["usage"]["completion_tokens"]


def test_chat_completion_whole_and_streamed(http):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    body = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 12, "temperature": 0}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert "Paris" in body["choices"][0]["message"]["content"]
    with http.stream("POST", "/v1/chat/completions", json={"messages": messages, "max_tokens": 12, "temperature": 0, "stream": True}) as r:
        events = _sse(r)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[1:-1])
    assert streamed == body["choices"][0]["message"]["content"]


def test_chat_without_max_tokens_gets_what_the_context_leaves(http):
    body = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Say hi."}], "temperature": 0}).json()
    assert body["choices"][0]["finish_reason"] in ("stop", "length") and body["usage"]["completion_tokens"] >= 1


@pytest.mark.parametrize(
    "path, payload, status, fragment",
    [
        ("/v1/completions", b"{not json", 400, ""),
        ("/v1/completions", {"max_tokens": 4}, 400, "prompt"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 100000}, 400, "exceeds the limit"),
        ("/v1/completions", {"prompt": "hi", "n": 3}, 400, "n (only 1)"),
        ("/v1/completions", {"prompt": "hi", "temperature": 9}, 400, "temperature"),
        ("/v1/completions", {"prompt": "word " * 3000, "max_tokens": 4}, 400, "tokens"),
        ("/v1/completions", {"prompt": "hi", "model": "gpt-4o"}, 404, "not served here"),
        ("/v1/chat/completions", {"messages": []}, 400, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    ],
)
def test_bad_requests_get_4xx_in_openai_shape(http, path, payload, status, fragment):
    kwargs = {"content": payload, "headers": {"Content-Type": "application/json"}} if isinstance(payload, bytes) else {"json": payload}
    response = http.post(path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] and error["code"] == status


def test_tenant_over_quota_gets_429_at_once(http):
    payload = {"prompt": "Hello there, how are you today?", "max_tokens": 20}
    started = time.perf_counter()
    statuses = [http.post("/v1/completions", json=payload, headers={"X-Tenant": "tiny"}).status_code for _ in range(2)]
    assert 429 in statuses, statuses  # the tenant's 40-token burst holds one such request at most
    assert time.perf_counter() - started < 10


def test_health_endpoint(http):
    assert http.get("/health").json() == {"status": "serving"}


def test_client_that_drops_a_stream_frees_everything(http, cluster, decode_figures):
    payload = {"prompt": f"Drop me {time.time_ns()}: " + PROMPTS[-1]["prompt"], "max_tokens": 500, "stream": True}
    with http.stream("POST", "/v1/completions", json=payload) as response:
        lines = response.iter_lines()
        events = [line for line in (next(lines) for _ in range(4)) if line.startswith("data: ")]
        assert events, "the stream started"
    # The connection is closed: Serve cancels the handler, the router aborts both engine requests
    # (500 tokens would take decode over 10 s here; the check allows 5).
    deadline = time.monotonic() + 5
    while decode_figures()["unfinished_requests"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert decode_figures()["unfinished_requests"] == 0
    assert helpers.wait_until_no_kv_blocks_held(cluster) == {"prefill": True, "decode": True}
