"""The OpenAI-compatible HTTP API, served by the router replicas through Ray Serve's HTTP proxy.

    GET  /v1/models                 the served model
    POST /v1/completions            prompt -> text (stream: server-sent events)
    POST /v1/chat/completions       messages -> assistant message (stream: server-sent events)
    GET  /health                    200 while both pools have a healthy replica, else 503

Each request becomes a `pdserve.v1.GenerateRequest` and runs through the same `generate_stream`
as the gRPC service (validation, admission, placement, recovery), so both APIs behave alike.
Headers: `X-Request-Id` (Serve's proxy echoes it, or assigns one), `X-Tenant` (quota bucket),
`X-Priority: interactive|batch`;
the response carries `X-Pdserve-Route` (disaggregated or colocated).

Errors use OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the status of
the router's typed error: 400 invalid, 404 unknown model, 429 over a limit or quota, 503 no healthy
replica, 504 past the request deadline. An error after the stream has started arrives as one
final `data: {"error": ...}` event. Fields this cluster does not implement (n > 1, logprobs,
penalties, tools, ...) are refused with 400 rather than silently ignored.
"""

from __future__ import annotations

import json
import time
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from pdserve.v1 import inference_pb2
from router.errors import InvalidRequest, RequestError

openai_app = FastAPI(title="pdserve", description="OpenAI-compatible API of a pdserve cluster")

_FINISH = {inference_pb2.FINISH_REASON_LENGTH: "length", inference_pb2.FINISH_REASON_STOP: "stop"}
_PRIORITY = {"": inference_pb2.PRIORITY_UNSPECIFIED, "interactive": inference_pb2.PRIORITY_INTERACTIVE,
             "batch": inference_pb2.PRIORITY_BATCH}
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


# --- request bodies -----------------------------------------------------------------------------


class _OpenAIRequest(BaseModel):
    # OpenAI clients send fields this API has no use for; they are accepted and ignored, except
    # the ones listed in `unsupported()` when set to anything but their neutral value.
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = Field(None, ge=0, lt=2**64)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = 1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None

    def unsupported(self) -> list[str]:
        fields = []
        if self.n != 1:
            fields.append("n (only 1)")
        if self.presence_penalty or self.frequency_penalty:
            fields.append("presence_penalty/frequency_penalty")
        if self.logit_bias:
            fields.append("logit_bias")
        extras = self.model_extra or {}
        for name in ("logprobs", "top_logprobs", "best_of", "echo", "suffix", "tools", "functions", "response_format"):
            value = extras.get(name)
            neutral = value in (None, False, 0, "", [], {}) or (name == "best_of" and value == 1) or (
                name == "response_format" and isinstance(value, dict) and value.get("type") == "text")
            if not neutral:
                fields.append(name)
        return fields

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))


class CompletionRequest(_OpenAIRequest):
    prompt: str | list[str] | list[int]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for completions


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


# --- translation --------------------------------------------------------------------------------


def generate_request(body: _OpenAIRequest, headers) -> inference_pb2.GenerateRequest:
    """The gRPC request an OpenAI body stands for; InvalidRequest for what cannot be expressed.

    max_tokens 0 means "not given": the router fills in what the context leaves."""
    if unsupported := body.unsupported():
        raise InvalidRequest(f"not supported by this server: {', '.join(unsupported)}")
    request = inference_pb2.GenerateRequest(
        request_id=headers.get("x-request-id", ""),
        tenant=headers.get("x-tenant", ""),
        priority=_priority(headers.get("x-priority", "")),
    )
    if isinstance(body, ChatCompletionRequest):
        for i, message in enumerate(body.messages):
            if message.role not in _ROLES:
                raise InvalidRequest(f"messages[{i}].role {message.role!r} is not one of {sorted(_ROLES)}")
            request.chat.messages.add(role=_ROLES[message.role], content=_text_content(message.content, i))
        max_tokens = body.max_completion_tokens or body.max_tokens
    else:
        request.prompt = _single_prompt(body.prompt)
        max_tokens = body.max_tokens
    request.max_tokens = max_tokens or 0
    if body.temperature is not None:
        request.temperature = body.temperature
    if body.top_p is not None:
        request.top_p = body.top_p
    if body.seed is not None:
        request.seed = body.seed
    if body.stop:
        request.stop.extend([body.stop] if isinstance(body.stop, str) else body.stop)
    return request


def _single_prompt(prompt: str | list) -> str:
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    if prompt and all(isinstance(p, int) for p in prompt):
        raise InvalidRequest("token-id prompts are not supported; send text")
    raise InvalidRequest("'prompt' must be one string (batches of prompts are not supported; send one request each)")


def _text_content(content: str | list[dict[str, Any]] | None, index: int) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"messages[{index}].content: only text parts are supported, got {part.get('type')!r}")
        parts.append(part["text"])
    return "".join(parts)


def _priority(value: str) -> int:
    try:
        return _PRIORITY[value.strip().lower()]
    except KeyError:
        raise InvalidRequest(f"X-Priority {value!r} is not one of interactive, batch") from None


def _usage(usage: inference_pb2.Usage) -> dict:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def error_body(message: str, kind: str, code: int, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(error_body(str(exc), exc.openai_type, exc.http_status), status_code=exc.http_status)


@openai_app.exception_handler(RequestValidationError)
async def _malformed_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that does not parse: 400 in OpenAI's shape (FastAPI's default is a 422 of its own)."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid request body"))
    return JSONResponse(error_body(message, "invalid_request_error", 400, where or None), status_code=400)


# --- the routes (mixed into router.ingress.Router, which Serve wraps with this app) ----------------


class OpenAIRoutes:
    """HTTP handlers; the Router supplies `config`, `generate_stream(request, fill_max_tokens)` and `serving()`."""

    @openai_app.get("/v1/models")
    async def list_models(self) -> dict:
        return {"object": "list", "data": [{"id": self.config.model.served_name, "object": "model",
                                            "created": self.started_at, "owned_by": "pdserve"}]}

    @openai_app.get("/health")
    async def http_health(self) -> JSONResponse:
        serving = await self.serving()
        return JSONResponse({"status": "serving" if serving else "not_serving"}, status_code=200 if serving else 503)

    @openai_app.post("/v1/completions")
    async def completions(self, body: CompletionRequest, request: Request):
        return await self._respond(body, request, chat=False)

    @openai_app.post("/v1/chat/completions")
    async def chat_completions(self, body: ChatCompletionRequest, request: Request):
        return await self._respond(body, request, chat=True)

    async def _respond(self, body: _OpenAIRequest, http_request: Request, chat: bool):
        if body.model and body.model != self.config.model.served_name:
            message = f"model {body.model!r} is not served here; this cluster serves {self.config.model.served_name!r}"
            return JSONResponse(error_body(message, "not_found_error", 404, "model"), status_code=404)
        try:
            request = generate_request(body, http_request.headers)
            responses = self.generate_stream(request, fill_max_tokens=True)
            first = await anext(responses)  # errors before the first token are a status, not a 200 stream
        except RequestError as exc:
            return error_response(exc)
        except StopAsyncIteration:
            return JSONResponse(error_body("the request produced no output", "server_error", 503), status_code=503)
        shape = _ChatShape(self.config.model.served_name, first.request_id) if chat else _CompletionShape(
            self.config.model.served_name, first.request_id)
        # Serve's proxy already answers with X-Request-Id: the client's, or the one it assigned and
        # handed to this request (which the router then used as its own).
        headers = {"X-Pdserve-Route": first.route}
        if body.stream:
            return StreamingResponse(_sse(shape, first, responses, body.include_usage), media_type="text/event-stream", headers=headers)
        text, last = [first.text], first
        try:
            async for response in responses:
                text.append(response.text)
                last = response
        except RequestError as exc:
            return error_response(exc)
        return JSONResponse(shape.whole("".join(text), last), headers=headers)


async def _sse(shape, first, rest: AsyncIterator[inference_pb2.GenerateResponse], include_usage: bool) -> AsyncIterator[str]:
    def event(payload: dict) -> str:
        return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"

    if opening := shape.opening():
        yield event(opening)
    last = first
    yield event(shape.chunk(first))
    try:
        async for response in rest:
            last = response
            yield event(shape.chunk(response))
    except RequestError as exc:
        yield event(error_body(str(exc), exc.openai_type, exc.http_status))
        return
    if include_usage:
        yield event(shape.usage_chunk(last))
    yield "data: [DONE]\n\n"


class _CompletionShape:
    object_whole, object_chunk = "text_completion", "text_completion"

    def __init__(self, model: str, request_id: str):
        self.model, self.id, self.created = model, f"cmpl-{request_id}", int(time.time())

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}

    def opening(self) -> dict | None:
        return None

    def chunk(self, response: inference_pb2.GenerateResponse) -> dict:
        choice = {"index": 0, "text": response.text, "logprobs": None, "finish_reason": _FINISH.get(response.finish_reason)}
        return {**self._head(self.object_chunk), "choices": [choice]}

    def whole(self, text: str, last: inference_pb2.GenerateResponse) -> dict:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": _FINISH.get(last.finish_reason, "length")}
        return {**self._head(self.object_whole), "choices": [choice], "usage": _usage(last.usage)}

    def usage_chunk(self, last: inference_pb2.GenerateResponse) -> dict:
        return {**self._head(self.object_chunk), "choices": [], "usage": _usage(last.usage)}


class _ChatShape(_CompletionShape):
    object_whole, object_chunk = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str, request_id: str):
        super().__init__(model, request_id)
        self.id = f"chatcmpl-{request_id}"

    def opening(self) -> dict:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return {**self._head(self.object_chunk), "choices": [choice]}

    def chunk(self, response: inference_pb2.GenerateResponse) -> dict:
        choice = {"index": 0, "delta": {"content": response.text} if response.text else {}, "logprobs": None,
                  "finish_reason": _FINISH.get(response.finish_reason)}
        return {**self._head(self.object_chunk), "choices": [choice]}

    def whole(self, text: str, last: inference_pb2.GenerateResponse) -> dict:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": _FINISH.get(last.finish_reason, "length")}
        return {**self._head(self.object_whole), "choices": [choice], "usage": _usage(last.usage)}

