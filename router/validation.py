"""Checking a GenerateRequest and turning it into a `ValidatedRequest` the request path can trust."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

from router.errors import InvalidRequest
from pdserve.v1 import handoff_pb2, inference_pb2

CHAT_ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP_STRINGS = 8
MAX_STOP_LENGTH = 256
MAX_ID_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Limits:
    max_prompt_tokens: int
    max_output_tokens: int
    max_model_len: int


@dataclass(slots=True)
class ValidatedRequest:
    request_id: str
    prompt_token_ids: list[int]
    sampling: handoff_pb2.SamplingSpec
    tenant: str
    priority: int
    chat: bool = False
    trace_context: dict[str, str] = field(default_factory=dict)


def check_request(request: inference_pb2.GenerateRequest, limits: Limits) -> None:
    """Everything that can be checked before tokenization; raises InvalidRequest."""
    kind = request.WhichOneof("input")
    if kind is None:
        raise InvalidRequest("one of 'prompt' or 'chat' is required")
    if kind == "prompt" and not request.prompt:
        raise InvalidRequest("'prompt' is empty")
    if kind == "chat":
        if not request.chat.messages:
            raise InvalidRequest("'chat.messages' is empty")
        for i, message in enumerate(request.chat.messages):
            if message.role not in CHAT_ROLES:
                raise InvalidRequest(f"chat.messages[{i}].role {message.role!r} is not one of {sorted(CHAT_ROLES)}")
    if request.max_tokens == 0:
        raise InvalidRequest("'max_tokens' is required and must be at least 1")
    if request.max_tokens > limits.max_output_tokens:
        raise InvalidRequest(f"'max_tokens' {request.max_tokens} exceeds the limit of {limits.max_output_tokens}")
    if request.HasField("temperature") and not 0.0 <= request.temperature <= 2.0:
        raise InvalidRequest(f"'temperature' {request.temperature} is outside [0, 2]")
    if request.HasField("top_p") and not 0.0 < request.top_p <= 1.0:
        raise InvalidRequest(f"'top_p' {request.top_p} is outside (0, 1]")
    if len(request.stop) > MAX_STOP_STRINGS:
        raise InvalidRequest(f"at most {MAX_STOP_STRINGS} stop strings are allowed, got {len(request.stop)}")
    if any(not s or len(s) > MAX_STOP_LENGTH for s in request.stop):
        raise InvalidRequest(f"stop strings must be 1..{MAX_STOP_LENGTH} characters")
    if len(request.request_id) > MAX_ID_LENGTH or not request.request_id.isprintable():
        raise InvalidRequest(f"'request_id' must be printable and at most {MAX_ID_LENGTH} characters")
    if len(request.tenant) > MAX_ID_LENGTH:
        raise InvalidRequest(f"'tenant' must be at most {MAX_ID_LENGTH} characters")


def check_prompt_length(num_prompt_tokens: int, max_tokens: int, limits: Limits) -> None:
    if num_prompt_tokens == 0:
        raise InvalidRequest("the prompt encodes to no tokens")
    if num_prompt_tokens > limits.max_prompt_tokens:
        raise InvalidRequest(f"the prompt has {num_prompt_tokens} tokens; the limit is {limits.max_prompt_tokens}")
    if num_prompt_tokens + max_tokens > limits.max_model_len:
        raise InvalidRequest(
            f"prompt ({num_prompt_tokens} tokens) plus max_tokens ({max_tokens}) exceeds the model's "
            f"context of {limits.max_model_len} tokens"
        )


def sampling_spec(request: inference_pb2.GenerateRequest) -> handoff_pb2.SamplingSpec:
    """The engine-facing sampling settings. Sampled requests always carry a seed, so that prefill and
    decode draw the same first token."""
    temperature = request.temperature if request.HasField("temperature") else 1.0
    spec = handoff_pb2.SamplingSpec(
        max_tokens=request.max_tokens,
        temperature=temperature,
        top_p=request.top_p if request.HasField("top_p") else 1.0,
        stop=list(request.stop),
    )
    if request.HasField("seed"):
        spec.seed = request.seed
    elif temperature > 0:
        spec.seed = random.getrandbits(63)
    return spec


def request_id_for(request: inference_pb2.GenerateRequest) -> str:
    return request.request_id or f"req-{uuid.uuid4().hex}"
