"""One request across the pools, top to bottom.

    decision = await placement.place(tokens)         decode pick, disaggregate or not, prefill pick
    prefill = await run_prefill(request, decision)   the chosen prefill replica (the next on failure)
    yield first token                                time to first token ends here
    async for chunk in run_decode(request, decision) decode pulls the KV and streams the rest
        yield chunk

Every hop is cancelled when the caller stops reading (the client went away), which aborts the
engine requests and frees their KV blocks. An engine that fails a request becomes `Unavailable`,
never an empty success.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import AsyncIterator

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from decode_service.deployment import DecodeChunk
from router.errors import Unavailable
from router.placement import Placement
from router.replica_picking import pin
from router.scheduling.scheduler import NoReplicas
from router.scheduling.types import Decision
from router.validation import ValidatedRequest
from pdserve.v1 import handoff_pb2, inference_pb2

logger = logging.getLogger("pdserve.router")

_REPLICA_GONE = (RayActorError, ActorDiedError, ActorUnavailableError)
_FINISH = {"length": inference_pb2.FINISH_REASON_LENGTH, "stop": inference_pb2.FINISH_REASON_STOP}
DISAGGREGATED, COLOCATED = "disaggregated", "colocated"


@dataclass(frozen=True, slots=True)
class PathSettings:
    prefill_attempts: int = 2
    prefill_timeout_s: float = 120.0


class RequestPath:
    def __init__(self, prefill_handle, decode_handle, placement: Placement, settings: PathSettings = PathSettings()):
        self._prefill = prefill_handle
        self._decode = decode_handle
        self._placement = placement
        self._settings = settings

    async def generate(self, request: ValidatedRequest) -> AsyncIterator[inference_pb2.GenerateResponse]:
        try:
            decision = await self._placement.place(request.prompt_token_ids)
        except NoReplicas as exc:
            raise Unavailable(str(exc)) from exc
        replicas = decision.decode[:1] + decision.prefill[:1]
        with self._placement.track(*replicas):
            async for response in self._generate(request, decision):
                yield response

    async def _generate(self, request: ValidatedRequest, decision: Decision) -> AsyncIterator[inference_pb2.GenerateResponse]:
        route = decision.route
        decode_request = handoff_pb2.DecodeRequest(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling=request.sampling,
            trace_context=request.trace_context,
        )
        sent_tokens = 0
        if route == DISAGGREGATED:
            prefill = await self.run_prefill(request, decision.prefill)
            first = inference_pb2.GenerateResponse(
                request_id=request.request_id,
                text=prefill.first_token_text,
                token_ids=[prefill.first_token_id],
                route=route,
            )
            sent_tokens = 1
            if prefill.finished:
                first.finish_reason = _FINISH.get(prefill.finish_reason, inference_pb2.FINISH_REASON_LENGTH)
                first.usage.CopyFrom(_usage(prefill.prompt_tokens, 1, prefill.cached_prompt_tokens))
                yield first
                return
            yield first
            decode_request.first_token_id = prefill.first_token_id
            decode_request.first_token_text = prefill.first_token_text
            if prefill.HasField("handoff"):
                decode_request.handoff.CopyFrom(prefill.handoff)

        async for chunk in self.run_decode(decode_request, decision.decode):
            sent_tokens += len(chunk.token_ids)
            response = inference_pb2.GenerateResponse(
                request_id=request.request_id, text=chunk.text, token_ids=chunk.token_ids
            )
            if sent_tokens == len(chunk.token_ids):  # the first message of a colocated request
                response.route = route
            if chunk.finish_reason is not None:
                response.finish_reason = _FINISH.get(chunk.finish_reason, inference_pb2.FINISH_REASON_LENGTH)
                response.usage.CopyFrom(_usage(chunk.prompt_tokens, sent_tokens, chunk.cached_prompt_tokens))
            yield response

    async def run_prefill(self, request: ValidatedRequest, ranking: list[str]) -> handoff_pb2.PrefillResult:
        prefill_request = handoff_pb2.PrefillRequest(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling=request.sampling,
            trace_context=request.trace_context,
        )
        last_error: Exception | None = None
        for attempt in range(1, self._settings.prefill_attempts + 1):
            # A retry skips the replica that was just lost.
            response = self._prefill.options(session_id=pin(ranking[attempt - 1 :] or ranking)).prefill.remote(prefill_request)
            started = time.perf_counter()
            try:
                result = await asyncio.wait_for(_awaited(response), self._settings.prefill_timeout_s)
                logger.info(
                    "request %s: prefill on %s (ranked %s) took %.3f s, engine %.3f s, %d/%d prompt tokens cached",
                    request.request_id, result.replica, ranking[:2], time.perf_counter() - started,
                    result.prefill_seconds, result.cached_prompt_tokens, result.prompt_tokens,
                )
                return result
            except _REPLICA_GONE as exc:  # nothing was sent to the client yet: another replica may serve it
                last_error = exc
                logger.warning("request %s: prefill replica lost (attempt %d): %s", request.request_id, attempt, exc)
            except asyncio.TimeoutError as exc:
                response.cancel()
                raise Unavailable(f"no prefill replica answered within {self._settings.prefill_timeout_s:g} s") from exc
            except asyncio.CancelledError:
                response.cancel()
                raise
            except Exception as exc:
                raise Unavailable(f"prefill failed: {_reason(exc)}") from exc
        raise Unavailable(f"prefill replicas failed {self._settings.prefill_attempts} times: {_reason(last_error)}")

    async def run_decode(self, decode_request: handoff_pb2.DecodeRequest, ranking: list[str]) -> AsyncIterator[DecodeChunk]:
        stream = self._decode.options(stream=True, session_id=pin(ranking)).generate.remote(decode_request)
        try:
            async for chunk in stream:
                if chunk.finish_reason == "error":
                    raise Unavailable("the decode engine failed the request (KV transfer or engine error)")
                yield chunk
        except _REPLICA_GONE as exc:
            raise Unavailable(f"decode replica lost: {_reason(exc)}") from exc
        except (asyncio.CancelledError, GeneratorExit):
            stream.cancel()
            raise
        except Unavailable:
            stream.cancel()
            raise
        except Exception as exc:
            stream.cancel()
            raise Unavailable(f"decode failed: {_reason(exc)}") from exc


async def _awaited(response):
    return await response


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> inference_pb2.Usage:
    return inference_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_prompt_tokens=cached)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
