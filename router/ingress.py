"""The router's ingress: a Ray Serve replica that serves `pdserve.v1.Inference` over gRPC itself
and the OpenAI-compatible HTTP API (router/openai_api.py) through Serve's HTTP proxy.

Why not Serve's own gRPC proxy: in Ray 2.60 it binds `[::]:<port>` with no host option
(ray/serve/_private/grpc_util.py), and this product binds every server to the address the
operator names. Each router replica runs a `grpc.aio` server on `router.host:router.grpc_port`
with SO_REUSEPORT, so replicas on one node share the port and the kernel spreads connections.
The replica also serves the standard `grpc.health.v1.Health` service.

Per request, for both APIs (`generate_stream`): check -> tokenize -> admit -> place ->
RequestPath.generate -> stream, within router.request_timeout_s; the typed errors of the core
become status codes in the two front ends and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from ray import serve

from pdserve import tracing
from pdserve.config import ClusterConfig, SchedulingSpec
from pdserve.metrics import RequestClock, RouterMetrics
from pdserve.v1 import inference_pb2, inference_pb2_grpc
from router.admission import Admission
from router.errors import DeadlineExceeded, RequestError, Unavailable
from router.openai_api import OpenAIRoutes
from router.placement import Placement
from router.request_path import RequestPath
from router.tokenization import PromptTokenizer
from router.validation import (
    Limits,
    ValidatedRequest,
    check_prompt_length,
    check_request,
    request_id_for,
    sampling_spec,
)

logger = logging.getLogger("pdserve.router")
SERVICE_NAME = "pdserve.v1.Inference"


class Router(OpenAIRoutes, inference_pb2_grpc.InferenceServicer):
    async def __init__(self, config: dict, prefill_handle, decode_handle):
        self.config = ClusterConfig.model_validate(config)
        self.started_at = int(time.time())
        self.limits = Limits(
            max_prompt_tokens=self.config.max_prompt_tokens,
            max_output_tokens=self.config.router.max_output_tokens,
            max_model_len=self.config.model.max_model_len,
        )
        self.tokenizer = PromptTokenizer(self.config.model.resolved_path())
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(self.config.redis.url)
        self.placement = Placement.create(self.redis, self.config)
        await self.placement.start()
        tracing.setup_tracing(self.config, "pdserve-router")
        self.metrics = RouterMetrics()
        self.admission = Admission(
            self.redis, self.config.redis.namespace, self.config.router.admission, lease_s=self.config.router.request_timeout_s,
            on_bypass=self.metrics.redis_bypasses.inc,
        )
        self.path = RequestPath(prefill_handle, decode_handle, self.placement, self.config.router.recovery)
        self.path.recoveries.on_count = lambda cause: self.metrics.recoveries.inc(tags={"cause": cause})
        self.health = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
        self.server = await self._start_server()
        self._health_task = asyncio.get_running_loop().create_task(self._watch_pools())

    async def _start_server(self) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
        inference_pb2_grpc.add_InferenceServicer_to_server(self, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        address = f"{self.config.router.host}:{self.config.router.grpc_port}"
        if server.add_insecure_port(address) == 0:
            raise RuntimeError(f"router could not bind {address}")
        await server.start()
        logger.info("router serving %s on %s", SERVICE_NAME, address)
        return server

    # --- pdserve.v1.Inference -------------------------------------------------------------------

    async def Generate(self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        try:
            async for response in self.generate_stream(request):
                await context.write(response)
        except RequestError as exc:
            await context.abort(exc.grpc_code, str(exc))
        except asyncio.CancelledError:
            logger.info("request %s cancelled by the client", request.request_id or "(unnamed)")
            raise

    async def Health(self, request, context) -> inference_pb2.HealthResponse:
        pools = self._pool_health()
        serving = all(p.healthy_replicas > 0 for p in pools)
        return inference_pb2.HealthResponse(
            status=inference_pb2.HealthResponse.SERVING if serving else inference_pb2.HealthResponse.NOT_SERVING,
            model=self.config.model.served_name,
            pools=pools,
        )

    # --- one request, for both front ends ---------------------------------------------------------

    async def generate_stream(
        self, request: inference_pb2.GenerateRequest, fill_max_tokens: bool = False
    ) -> AsyncIterator[inference_pb2.GenerateResponse]:
        """Check, tokenize, admit and run one request, streaming its responses; raises RequestError.

        `fill_max_tokens`: a max_tokens of 0 means "what the context leaves" (the OpenAI API's
        default for chat), capped by router.max_output_tokens. Each request is one trace
        (pdserve.request) and one set of metric observations (pdserve/metrics.py)."""
        clock = RequestClock(self.metrics, time.monotonic())
        outcome, last = "error", None
        with tracing.span("pdserve.request", None, **{"pdserve.request_id": request.request_id or None}) as (span, carrier):
            try:
                validated = self._validate(request, fill_max_tokens)
                validated.trace_context.update(carrier)
                priority = "batch" if validated.priority == inference_pb2.PRIORITY_BATCH else "interactive"
                span.set_attributes({"pdserve.request_id": validated.request_id, "pdserve.tenant": validated.tenant,
                                     "pdserve.priority": priority, "pdserve.prompt_tokens": len(validated.prompt_token_ids),
                                     "pdserve.max_tokens": validated.sampling.max_tokens})
                cost = len(validated.prompt_token_ids) + validated.sampling.max_tokens
                deadline = asyncio.get_running_loop().time() + self.config.router.request_timeout_s
                async with self.admission.admit(validated.tenant, validated.priority, cost, validated.request_id):
                    clock.admitted(time.monotonic(), priority)
                    responses = self.path.generate(validated)
                    try:
                        while True:
                            try:
                                # The deadline guards each step, not the yield: the caller's write
                                # must not be cancelled. (No task per token, unlike wait_for.)
                                async with asyncio.timeout_at(deadline):
                                    response = await anext(responses)
                            except StopAsyncIteration:
                                break
                            except TimeoutError:
                                raise DeadlineExceeded(
                                    f"request {validated.request_id} ran past router.request_timeout_s "
                                    f"({self.config.router.request_timeout_s:g} s) and was cancelled"
                                ) from None
                            clock.tokens(time.monotonic(), len(response.token_ids), response.route)
                            last = response
                            yield response
                    finally:
                        await responses.aclose()
                outcome = "ok"
            except RequestError as exc:
                outcome = exc.outcome
                raise
            except (asyncio.CancelledError, GeneratorExit):
                outcome = "cancelled"
                raise
            except Exception as exc:  # a bug or an unforeseen failure: a retryable status, never a 500 / UNKNOWN
                outcome = "unavailable"
                logger.exception("request %s failed unexpectedly", request.request_id or "(unnamed)")
                raise Unavailable(f"internal error ({type(exc).__name__}); the request was not completed") from exc
            finally:
                usage = last.usage if last is not None and last.HasField("usage") else None
                clock.finished(time.monotonic(), outcome, usage)
                span.set_attributes({"pdserve.outcome": outcome, "pdserve.route": clock.route})
                if usage is not None:
                    span.set_attributes({"pdserve.completion_tokens": usage.completion_tokens,
                                         "pdserve.cached_prompt_tokens": usage.cached_prompt_tokens})

    async def serving(self) -> bool:
        """Whether both pools have a healthy replica (what the health endpoints answer)."""
        return all(p.healthy_replicas > 0 for p in await asyncio.to_thread(self._pool_health))

    # --- steps ----------------------------------------------------------------------------------

    def _validate(self, request: inference_pb2.GenerateRequest, fill_max_tokens: bool = False) -> ValidatedRequest:
        filling = fill_max_tokens and request.max_tokens == 0
        if filling:
            request.max_tokens = self.limits.max_output_tokens  # capped to the context once the prompt is tokenized
        check_request(request, self.limits)
        token_ids = self.tokenizer.encode(request)
        if filling:
            request.max_tokens = max(1, min(request.max_tokens, self.limits.max_model_len - len(token_ids)))
        check_prompt_length(len(token_ids), request.max_tokens, self.limits)
        return ValidatedRequest(
            request_id=request_id_for(request),
            prompt_token_ids=token_ids,
            sampling=sampling_spec(request),
            tenant=request.tenant,
            priority=request.priority,
            chat=request.WhichOneof("input") == "chat",
        )

    def _pool_health(self) -> list[inference_pb2.PoolHealth]:
        app = serve.status().applications.get(self.config.name)
        pools = []
        for pool, deployment, spec in (
            ("prefill", "PrefillServer", self.config.prefill),
            ("decode", "DecodeServer", self.config.decode),
        ):
            status = app.deployments.get(deployment) if app else None
            running = status.replica_states.get("RUNNING", 0) if status else 0
            target = spec.autoscaling.min_replicas if spec.autoscaling else spec.replicas
            pools.append(inference_pb2.PoolHealth(pool=pool, healthy_replicas=running, target_replicas=target))
        return pools

    async def _watch_pools(self) -> None:
        """Keep grpc.health.v1 in step with the pools (a load balancer's readiness probe reads it)."""
        while True:
            try:
                serving = await self.serving()
            except Exception:  # the controller can be briefly unreachable; report not serving meanwhile
                serving = False
            status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                await _maybe_await(self.health.set(name, status))
            await asyncio.sleep(2.0)

    # --- Serve hooks ----------------------------------------------------------------------------

    async def ready(self) -> str:
        return f"{self.config.router.host}:{self.config.router.grpc_port}"

    async def placement_snapshot(self, prompt: str) -> dict:
        """Where this router would place `prompt` now (operators and tests: a dry run, nothing is sent)."""
        token_ids = self.tokenizer.encode(inference_pb2.GenerateRequest(prompt=prompt, max_tokens=1))
        decision = await self.placement.place(token_ids)
        return {"route": decision.route, "prefill": decision.prefill, "decode": decision.decode,
                "prefill_matched_blocks": decision.prefill_matched_blocks, "decode_matched_blocks": decision.decode_matched_blocks}

    async def configure_scheduling(self, scheduling: dict) -> None:
        """Swap this router's scheduling profiles live (a `router.scheduling` section of the config)."""
        self.placement.reconfigure(SchedulingSpec.model_validate(scheduling))

    async def pool_figures(self) -> dict[str, dict[str, dict[str, float]]]:
        """Every live replica's last reported figures, per pool, as this router sees them."""
        return {pool: {r: dict(load.figures or {}) for r, load in view.replicas.items()} for pool, view in self.placement.loads.items()}

    async def recovery_figures(self) -> dict:
        """How often this router recovered accepted requests from failed replicas or engines."""
        return self.path.recoveries.snapshot()

    async def __del__(self):
        if getattr(self, "server", None) is not None:
            await self.server.stop(grace=5)
        if getattr(self, "placement", None) is not None:
            await self.placement.stop()


async def _maybe_await(value):
    if asyncio.iscoroutine(value):
        await value
