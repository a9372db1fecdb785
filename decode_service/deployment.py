"""DecodeServer: one Ray Serve replica around one vLLM engine in the KV-consumer role.

Call order (from the router, through a streaming Serve handle):
    generate(DecodeRequest) -> stream of DecodeChunk
        with a handoff: the engine pulls the prompt's KV from the prefill replica over the
        connector (NIXL), then continues generation; the first token, which the router already
        sent to the client, is not repeated.
        without a handoff: the engine prefills the prompt itself (colocated serving).
    figures(), check_health(), ...                the replica's lifecycle (pdserve/engine_replica.py)
Every running sequence shares the engine's continuous batch. Closing the stream (the client went
away) aborts the engine request, which also tells the prefill replica to free its blocks.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator

from decode_service.stream import FirstTokenSkipper
from kv_transfer.handoff import decode_params
from pdserve import tracing
from pdserve.engine import sampling_params
from pdserve.engine_replica import EngineReplica
from pdserve.v1 import handoff_pb2

logger = logging.getLogger("pdserve.decode")


@dataclass(slots=True)
class DecodeChunk:
    """Tokens decode produced since the previous chunk; the last chunk has `finish_reason` set."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None  # "length", "stop", or "error" (the engine failed the request)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens the engine did not compute: pulled over KV transfer or cached
    replica: str = ""


class DecodeServer(EngineReplica):
    pool = "decode"

    async def __init__(self, config: dict):
        self.first_token_mismatches = 0
        await self.start_replica(config)

    async def generate(self, request: handoff_pb2.DecodeRequest) -> AsyncIterator[DecodeChunk]:
        kv_params = decode_params(request.handoff) if request.HasField("handoff") else None
        params = sampling_params(request.sampling, kv_transfer_params=kv_params, delta=True)
        skipper = FirstTokenSkipper.for_request(request)
        engine_request_id = f"{request.request_id}-d{uuid.uuid4().hex[:6]}"
        attributes = {"pdserve.replica": self.replica_id, "pdserve.prompt_tokens": len(request.prompt_token_ids),
                      "pdserve.kv_pull": kv_params is not None}
        with tracing.span("pdserve.decode", request.trace_context, **attributes) as (span, _):
            generated, cached = 0, 0
            async for output in self.engine.engine.generate(
                {"prompt_token_ids": list(request.prompt_token_ids)}, params, engine_request_id
            ):
                completion = output.outputs[0]
                token_ids, text = skipper.feed(list(completion.token_ids), completion.text)
                if skipper.mismatched:
                    self.first_token_mismatches += 1
                    skipper.mismatched = False
                    logger.warning("request %s: decode's first token differs from prefill's", request.request_id)
                finish = completion.finish_reason
                generated += len(token_ids)
                cached = output.num_cached_tokens or cached
                if finish is not None:
                    span.set_attributes({"pdserve.finish_reason": finish, "pdserve.tokens": generated,
                                         "pdserve.cached_prompt_tokens": cached})
                if not token_ids and not text and finish is None:
                    continue
                yield DecodeChunk(
                    token_ids=token_ids,
                    text=text,
                    finish_reason=finish,
                    prompt_tokens=len(request.prompt_token_ids),
                    cached_prompt_tokens=cached,
                    replica=self.replica_id,
                )

    def figures(self) -> dict:
        return {**super().figures(), "first_token_mismatches": self.first_token_mismatches}
