"""PrefillServer: one Ray Serve replica around one vLLM engine in the KV-producer role.

Call order (from the router, through a Serve handle):
    prefill(PrefillRequest) -> PrefillResult      runs the prompt, clamped to one token; the engine
                                                  keeps the prompt's KV blocks for decode's pull
    figures() -> dict                             live load and cache figures of this engine
A cancelled call aborts the engine request, which frees its blocks at once.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from ray import serve

from kv_transfer.handoff import handoff_from_vllm, prefill_params
from pdserve import tracing
from pdserve.config import ClusterConfig
from pdserve.engine import sampling_params, start_engine
from pdserve.v1 import handoff_pb2
from router.replica_reporting import ReplicaReporting

logger = logging.getLogger("pdserve.prefill")


class PrefillServer:
    async def __init__(self, config: dict):
        self.config = ClusterConfig.model_validate(config)
        tracing.setup_tracing(self.config, "pdserve-prefill")
        self.replica_id = _replica_name("prefill")
        self.engine = start_engine(self.config, self.config.prefill, "kv_producer", self.replica_id)
        self.reporting = ReplicaReporting(self.config, "prefill", self.replica_id, self.engine.events_endpoint, self.engine.live_figures)
        await self.reporting.start()
        logger.info("prefill engine %s ready, side channel port %d", self.engine.engine_id, self.engine.side_channel_port)

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

    def figures(self) -> dict:
        return {"replica": self.replica_id, "pid": os.getpid(), **self.engine.live_figures()}

    def record_routing_stats(self) -> dict:
        """Ray Serve polls this; the request router reads it as `replica.routing_stats`."""
        return self.engine.figures.snapshot()

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def holds_no_kv_blocks(self) -> bool:
        return await self.engine.holds_no_kv_blocks()

    async def __del__(self):
        reporting = getattr(self, "reporting", None)
        if reporting is not None:
            await reporting.stop()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _replica_name(pool: str) -> str:
    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (direct construction in a test)
        return f"{pool}-{uuid.uuid4().hex[:8]}"
