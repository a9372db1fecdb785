"""A small gRPC client for pdserve.v1.Inference, used by the CLI, the tests and the benchmarks."""

from __future__ import annotations

from typing import Iterator

import grpc

from pdserve.v1 import inference_pb2, inference_pb2_grpc


def make_request(
    prompt: str | None = None,
    *,
    chat: list[tuple[str, str]] | None = None,
    max_tokens: int = 32,
    temperature: float | None = 0.0,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    request_id: str = "",
    tenant: str = "",
) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(max_tokens=max_tokens, stop=stop or [], request_id=request_id, tenant=tenant)
    if chat is not None:
        request.chat.messages.extend(inference_pb2.ChatMessage(role=r, content=c) for r, c in chat)
    elif prompt is not None:
        request.prompt = prompt
    if temperature is not None:
        request.temperature = temperature
    if top_p is not None:
        request.top_p = top_p
    if seed is not None:
        request.seed = seed
    return request


class InferenceClient:
    def __init__(self, address: str):
        self.channel = grpc.insecure_channel(address)
        self.stub = inference_pb2_grpc.InferenceStub(self.channel)

    def stream(self, request: inference_pb2.GenerateRequest, timeout: float | None = 300) -> Iterator[inference_pb2.GenerateResponse]:
        return self.stub.Generate(request, timeout=timeout)

    def complete(self, request: inference_pb2.GenerateRequest, timeout: float | None = 300) -> tuple[str, list[int], inference_pb2.GenerateResponse]:
        """Read the whole stream: (text, token ids, last message)."""
        text, ids, last = [], [], None
        for response in self.stream(request, timeout=timeout):
            text.append(response.text)
            ids.extend(response.token_ids)
            last = response
        return "".join(text), ids, last

    def health(self, timeout: float = 10) -> inference_pb2.HealthResponse:
        return self.stub.Health(inference_pb2.HealthRequest(), timeout=timeout)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "InferenceClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
