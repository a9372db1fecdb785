"""The OpenAI-compatible API's translation and response shapes (no cluster; the HTTP round trip is
in tests/integration/test_openai_http.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from pdserve.v1 import inference_pb2
from router.errors import InvalidRequest, Unavailable
from router.openai_api import ChatCompletionRequest, CompletionRequest, _ChatShape, _CompletionShape, _sse, generate_request


def completion(**fields):
    return CompletionRequest.model_validate({"prompt": "Hello", **fields})


def chat(*messages, **fields):
    return ChatCompletionRequest.model_validate({"messages": [dict(role=r, content=c) for r, c in messages], **fields})


def test_completion_fields_map_onto_the_grpc_request():
    request = generate_request(
        completion(max_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop="\n"),
        {"x-request-id": "abc", "x-tenant": "team-a", "x-priority": "batch"},
    )
    assert (request.prompt, request.max_tokens, request.seed, list(request.stop)) == ("Hello", 7, 3, ["\n"])
    assert request.temperature == pytest.approx(0.5) and request.top_p == pytest.approx(0.9)
    assert (request.request_id, request.tenant, request.priority) == ("abc", "team-a", inference_pb2.PRIORITY_BATCH)


def test_unset_sampling_fields_stay_unset_so_the_router_defaults_apply():
    request = generate_request(completion(), {})
    assert not request.HasField("temperature") and not request.HasField("top_p") and not request.HasField("seed")
    assert request.max_tokens == 16  # OpenAI's completions default


def test_chat_messages_roles_and_text_parts():
    body = chat(("developer", "Be brief."), ("user", [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]))
    request = generate_request(body, {})
    assert [(m.role, m.content) for m in request.chat.messages] == [("system", "Be brief."), ("user", "Hi there")]
    assert request.max_tokens == 0  # not given: the router fills in what the context leaves


def test_max_completion_tokens_wins_over_max_tokens():
    assert generate_request(chat(("user", "x"), max_tokens=5, max_completion_tokens=9), {}).max_tokens == 9


@pytest.mark.parametrize(
    "body, fragment",
    [
        (completion(prompt=[1, 2, 3]), "token-id prompts"),
        (completion(prompt=["a", "b"]), "one string"),
        (completion(n=2), "n (only 1)"),
        (completion(logprobs=2), "logprobs"),
        (completion(presence_penalty=0.5), "presence_penalty"),
        (completion(echo=True), "echo"),
        (chat(("user", "x"), tools=[{"type": "function"}]), "tools"),
        (chat(("user", "x"), response_format={"type": "json_object"}), "response_format"),
        (chat(("tool", "x")), "role 'tool'"),
        (chat(("user", [{"type": "image_url", "image_url": {"url": "x"}}])), "only text parts"),
    ],
)
def test_what_cannot_be_served_is_refused_not_ignored(body, fragment):
    with pytest.raises(InvalidRequest, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        generate_request(body, {})


def test_neutral_values_of_unsupported_fields_are_accepted():
    body = chat(("user", "x"), n=1, logprobs=False, response_format={"type": "text"}, best_of=1, user="someone")
    assert generate_request(body, {}).chat.messages[0].content == "x"


def test_unknown_priority_header_is_refused():
    with pytest.raises(InvalidRequest, match="X-Priority"):
        generate_request(completion(), {"x-priority": "urgent"})


def _responses():
    first = inference_pb2.GenerateResponse(request_id="r1", text=" Paris", token_ids=[1], route="disaggregated")
    last = inference_pb2.GenerateResponse(request_id="r1", text=".", token_ids=[2], finish_reason=inference_pb2.FINISH_REASON_STOP)
    last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.cached_prompt_tokens = 5, 2, 3
    return first, last


async def _aiter(items, error=None):
    for item in items:
        yield item
    if error is not None:
        raise error


def _events(shape, first, rest, include_usage=False) -> list:
    async def collect():
        return [e async for e in _sse(shape, first, rest, include_usage)]

    raw = asyncio.run(collect())
    assert all(e.startswith("data: ") and e.endswith("\n\n") for e in raw)
    return [e[6:-2] if e[6:-2] == "[DONE]" else json.loads(e[6:-2]) for e in raw]


def test_chat_stream_events():
    first, last = _responses()
    events = _events(_ChatShape("m", "r1"), first, _aiter([last]), include_usage=True)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [e["choices"][0]["delta"].get("content") for e in events[1:3]] == [" Paris", "."]
    assert events[2]["choices"][0]["finish_reason"] == "stop"
    assert events[3]["choices"] == [] and events[3]["usage"]["total_tokens"] == 7
    assert events[3]["usage"]["prompt_tokens_details"] == {"cached_tokens": 3}
    assert events[-1] == "[DONE]"
    assert {e["id"] for e in events[:-1]} == {"chatcmpl-r1"} and events[0]["object"] == "chat.completion.chunk"


def test_error_after_the_stream_started_is_one_final_error_event():
    first, _ = _responses()
    events = _events(_CompletionShape("m", "r1"), first, _aiter([], error=Unavailable("decode replica lost")))
    assert events[0]["choices"][0]["text"] == " Paris"
    assert events[-1]["error"]["code"] == 503 and "decode replica lost" in events[-1]["error"]["message"]


def test_whole_completion_shape():
    first, last = _responses()
    body = _CompletionShape("m", "r1").whole(" Paris.", last)
    assert body["object"] == "text_completion" and body["choices"][0] == {
        "index": 0, "text": " Paris.", "logprobs": None, "finish_reason": "stop"}
    assert body["usage"]["completion_tokens"] == 2
