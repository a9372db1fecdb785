"""PrefillServer: one Ray Serve replica around one vLLM engine in the KV-producer role.

Call order (from the router, through a Serve handle):
    prefill(PrefillRequest) -> PrefillResult      runs the prompt, clamped to one token; the engine
                                                  keeps the prompt's KV blocks for decode's pull
    figures(), check_health(), ...                the replica's lifecycle (pdserve/engine_replica.py)
A cancelled call aborts the engine request, which frees its blocks at once.
"""

from __future__ import annotations

import time
import uuid

from kv_transfer.handoff import handoff_from_vllm, prefill_params
from pdserve import tracing
from pdserve.engine import sampling_params
from pdserve.engine_replica import EngineReplica
from pdserve.v1 import handoff_pb2


class PrefillServer(EngineReplica):
    pool = "prefill"

    async def __init__(self, config: dict):
        await self.start_replica(config)

    async def prefill(self, request: handoff_pb2.PrefillRequest) -> handoff_pb2.PrefillResult:
        started = time.perf_counter()
        params = sampling_params(request.sampling, max_tokens=1, kv_transfer_params=prefill_params())
        engine_request_id = f"{request.request_id}-p{uuid.uuid4().hex[:6]}"
        attributes = {"pdserve.replica": self.replica_id, "pdserve.prompt_tokens": len(request.prompt_token_ids)}
        with tracing.span("pdserve.prefill", request.trace_context, **attributes) as (span, _):
            final = None
            async for output in self.engine.engine.generate(
                {"prompt_token_ids": list(request.prompt_token_ids)}, params, engine_request_id
            ):
                final = output
            completion = final.outputs[0]
            if completion.finish_reason == "error" or not completion.token_ids:
                raise RuntimeError(f"prefill engine failed request {request.request_id}")
            handoff = handoff_from_vllm(final.kv_transfer_params, self.config.kv_transfer.connector)
            span.set_attributes({
                "pdserve.cached_prompt_tokens": final.num_cached_tokens or 0,
                "pdserve.kv_blocks_held": sum(len(g.block_ids) for g in handoff.remote_block_groups) if handoff else 0,
            })
        hit_eos_or_stop = completion.finish_reason == "stop"
        return handoff_pb2.PrefillResult(
            request_id=request.request_id,
            first_token_id=completion.token_ids[0],
            first_token_text=completion.text,
            finished=hit_eos_or_stop or request.sampling.max_tokens <= 1,
            finish_reason="stop" if hit_eos_or_stop else "length",
            handoff=handoff,
            prompt_tokens=len(request.prompt_token_ids),
            cached_prompt_tokens=final.num_cached_tokens or 0,
            replica=self.replica_id,
            prefill_seconds=time.perf_counter() - started,
        )
