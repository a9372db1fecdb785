"""One request across the pools, top to bottom.

    decision = await placement.place(tokens, n)      decode pick, disaggregate or not, prefill pick
    prefill = await run_prefill(request, decision)   the chosen prefill replica (the next on failure)
    yield first token                                time to first token ends here
    async for chunk in stream_decode(...)            decode pulls the KV and streams the rest
        yield chunk

Every hop is cancelled when the caller stops reading (the client went away), which aborts the
engine requests and frees their KV blocks. An engine that fails a request becomes `Unavailable`,
never an empty success.

Recovery (router.recovery in the config), for requests already accepted:
- a prefill replica lost (or its engine failing the request) before the first token: the next-ranked
  prefill replica runs it; when the attempts are spent, decode prefills the prompt itself.
- a decode replica lost mid-stream, or its engine failing the request (a KV pull that failed under
  the "fail" policy, an engine error): the stream resumes on a decode replica with the prompt plus
  every token already sent as its prompt, for the tokens still owed. The client sees one unbroken
  stream. Greedy output is unchanged; a sampled one continues from a fresh draw of the same seed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable

from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

from decode_service.deployment import DecodeChunk
from pdserve import tracing
from pdserve.config import RecoverySpec
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


@dataclass(slots=True)
class RecoveryCounts:
    """How often this router recovered an accepted request (and how often it could not)."""

    prefill_retries: int = 0  # a prefill replica lost or failing; the next-ranked one ran it
    prefill_fallbacks: int = 0  # every prefill attempt failed; decode prefilled the prompt itself
    decode_resumes: int = 0  # a stream resumed on a decode replica after its replica or engine failed
    unrecovered: int = 0  # requests that ended UNAVAILABLE after an accepted start
    by_cause: dict[str, int] = field(default_factory=dict)
    on_count: Callable[[str], None] | None = None  # the router exports each count as a metric

    def count(self, what: str, cause: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        self.by_cause[cause] = self.by_cause.get(cause, 0) + 1
        if self.on_count is not None:
            self.on_count(cause)

    def snapshot(self) -> dict:
        return {"prefill_retries": self.prefill_retries, "prefill_fallbacks": self.prefill_fallbacks,
                "decode_resumes": self.decode_resumes, "unrecovered": self.unrecovered, "by_cause": dict(self.by_cause)}


class _DecodeFailed(Exception):
    """The decode replica died or its engine failed the request; `replica` is who, when known."""

    def __init__(self, cause: str, detail: str, replica: str | None):
        super().__init__(detail)
        self.cause, self.replica = cause, replica


class RequestPath:
    def __init__(self, prefill_handle, decode_handle, placement: Placement, recovery: RecoverySpec = RecoverySpec()):
        self._prefill = prefill_handle
        self._decode = decode_handle
        self._placement = placement
        self._recovery = recovery
        self.recoveries = RecoveryCounts()
        self._background: set[asyncio.Task] = set()  # block releases still running

    async def generate(self, request: ValidatedRequest) -> AsyncIterator[inference_pb2.GenerateResponse]:
        with tracing.span("pdserve.place", request.trace_context) as (span, _):
            try:
                decision = await self._placement.place(request.prompt_token_ids, request.sampling.max_tokens)
            except NoReplicas as exc:
                raise Unavailable(str(exc)) from exc
            span.set_attributes({"pdserve.route": decision.route, "pdserve.reason": decision.reason,
                                 "pdserve.prefill_ranking": ",".join(decision.prefill[:4]),
                                 "pdserve.decode_ranking": ",".join(decision.decode[:4]),
                                 "pdserve.prefill_matched_blocks": decision.prefill_matched_blocks,
                                 "pdserve.decode_matched_blocks": decision.decode_matched_blocks})
        replicas = decision.decode[:1] + decision.prefill[:1]
        with self._placement.track(*replicas):
            try:
                async for response in self._generate(request, decision):
                    yield response
            except Unavailable:
                self.recoveries.unrecovered += 1
                raise

    async def _generate(self, request: ValidatedRequest, decision: Decision) -> AsyncIterator[inference_pb2.GenerateResponse]:
        route = decision.route
        decode_request = handoff_pb2.DecodeRequest(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling=request.sampling,
            trace_context=request.trace_context,
        )
        sent: list[int] = []  # every token id the client has been sent
        prefill = await self.run_prefill(request, decision.prefill) if route == DISAGGREGATED else None
        if prefill is not None:
            first = inference_pb2.GenerateResponse(
                request_id=request.request_id,
                text=prefill.first_token_text,
                token_ids=[prefill.first_token_id],
                route=route,
            )
            sent.append(prefill.first_token_id)
            if prefill.finished:
                first.finish_reason = _FINISH.get(prefill.finish_reason, inference_pb2.FINISH_REASON_LENGTH)
                first.usage.CopyFrom(_usage(prefill.prompt_tokens, 1, prefill.cached_prompt_tokens))
                if prefill.HasField("handoff"):
                    self._release_prefill_blocks(request, prefill.handoff, decision.decode)
                yield first
                return
            yield first
            decode_request.first_token_id = prefill.first_token_id
            decode_request.first_token_text = prefill.first_token_text
            if prefill.HasField("handoff"):
                decode_request.handoff.CopyFrom(prefill.handoff)
        elif route == DISAGGREGATED:
            route = COLOCATED  # the prefill pool failed it: decode prefills the prompt itself

        async for chunk in self.stream_decode(request, decode_request, decision.decode, sent):
            response = inference_pb2.GenerateResponse(request_id=request.request_id, text=chunk.text, token_ids=chunk.token_ids)
            if len(sent) == len(chunk.token_ids):  # the first message of a colocated request
                response.route = route
            if chunk.finish_reason is not None:
                response.finish_reason = _FINISH.get(chunk.finish_reason, inference_pb2.FINISH_REASON_LENGTH)
                response.usage.CopyFrom(_usage(len(request.prompt_token_ids), len(sent), chunk.cached_prompt_tokens))
            yield response

    def _release_prefill_blocks(self, request: ValidatedRequest, handoff: handoff_pb2.KVHandoff, ranking: list[str]) -> None:
        """The first token ended the request, so no decode will pull the blocks prefill kept for it.
        vLLM 0.32's NixlConnector frees them only on a consumer's read notification or at lease end
        (kv_transfer.lease_seconds); a one-token pull by decode, in the background, is the prompt
        release (and leaves the prompt in decode's prefix cache for a follow-up turn)."""
        sampling = handoff_pb2.SamplingSpec(max_tokens=1, temperature=0.0, top_p=1.0)
        drain = handoff_pb2.DecodeRequest(request_id=f"{request.request_id}-release", prompt_token_ids=request.prompt_token_ids,
                                          sampling=sampling, handoff=handoff)

        async def pull() -> None:
            try:
                async for _ in self.run_decode(drain, ranking):
                    pass
            except Exception as exc:  # the lease still frees them, later
                logger.info("request %s: releasing prefill's blocks failed (%s); the lease frees them", request.request_id, _reason(exc))

        task = asyncio.get_running_loop().create_task(pull())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def run_prefill(self, request: ValidatedRequest, ranking: list[str]) -> handoff_pb2.PrefillResult | None:
        """The prefill result, or None when every attempt failed (decode is to prefill it instead)."""
        prefill_request = handoff_pb2.PrefillRequest(
            request_id=request.request_id,
            prompt_token_ids=request.prompt_token_ids,
            sampling=request.sampling,
            trace_context=request.trace_context,
        )
        timeout = self._recovery.prefill_timeout_s
        # Each attempt goes to a replica not tried yet; when none is left, decode prefills it. (A
        # call pinned to a lost replica alone would wait for its replacement to load an engine.)
        attempts = min(self._recovery.prefill_attempts, max(1, len(ranking)))
        for attempt in range(1, attempts + 1):
            with tracing.span("pdserve.prefill_call", request.trace_context, **{"pdserve.attempt": attempt}) as (span, carrier):
                result = await self._prefill_attempt(request, prefill_request, ranking, attempt, timeout, span, carrier)
            if result is not None:
                return result
        logger.warning("request %s: prefill failed %d times; decode prefills it", request.request_id, attempts)
        self.recoveries.count("prefill_fallbacks", "prefill_pool_failed")
        return None

    async def _prefill_attempt(self, request, prefill_request, ranking, attempt, timeout, span, carrier):
        """One prefill call: the result, or None when this replica failed and another may serve it."""
        prefill_request.trace_context.clear()
        prefill_request.trace_context.update(carrier)
        response = self._prefill.options(session_id=pin(ranking[attempt - 1 :])).prefill.remote(prefill_request)
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(_awaited(response), timeout)
        except asyncio.TimeoutError as exc:
            response.cancel()
            raise Unavailable(f"no prefill replica answered within {timeout:g} s") from exc
        except asyncio.CancelledError:
            response.cancel()
            raise
        except Exception as exc:  # nothing was sent to the client yet: another replica may serve it
            cause = "prefill_replica_lost" if isinstance(exc, _REPLICA_GONE) else "prefill_failed"
            logger.warning("request %s: prefill attempt %d failed (%s): %s", request.request_id, attempt, cause, _reason(exc))
            span.set_attributes({"pdserve.failure": cause, "pdserve.error": _reason(exc)})
            return None
        logger.info(
            "request %s: prefill on %s (ranked %s) took %.3f s, engine %.3f s, %d/%d prompt tokens cached",
            request.request_id, result.replica, ranking[:2], time.perf_counter() - started,
            result.prefill_seconds, result.cached_prompt_tokens, result.prompt_tokens,
        )
        span.set_attributes({"pdserve.replica": result.replica, "pdserve.cached_prompt_tokens": result.cached_prompt_tokens})
        if attempt > 1:
            self.recoveries.count("prefill_retries", "prefill_replica_lost")
        return result

    async def stream_decode(
        self, request: ValidatedRequest, decode_request: handoff_pb2.DecodeRequest, ranking: list[str], sent: list[int]
    ) -> AsyncIterator[DecodeChunk]:
        """Decode's chunks, resumed on a decode replica when the one streaming them fails.

        `sent` holds the tokens the client already has; each chunk's tokens are appended to it here."""
        resumes, wait_s, deadline = 0, None, None
        while True:
            progressed = False
            try:
                with tracing.span("pdserve.decode_call", request.trace_context, **{"pdserve.resume": resumes}) as (_, carrier):
                    decode_request.trace_context.clear()
                    decode_request.trace_context.update(carrier)
                    async for chunk in self.run_decode(decode_request, ranking, first_chunk_within=wait_s):
                        progressed = True
                        sent.extend(chunk.token_ids)
                        yield chunk
                return
            except _DecodeFailed as failure:
                owed = request.sampling.max_tokens - len(sent)
                if deadline is not None and not progressed and failure.cause == "decode_replica_lost":
                    # The resume reached a replica Serve has not yet dropped from its set: not a new
                    # failure of the request. Ask again until a live replica (or a replacement) takes it.
                    wait_s = deadline - time.monotonic()
                    if wait_s <= 0:
                        raise Unavailable(f"no decode replica took the resumed request within {self._recovery.resume_wait_s:g} s") from failure
                    await asyncio.sleep(min(0.5, wait_s))
                    continue
                if resumes >= self._recovery.decode_resumes or owed <= 0:
                    raise Unavailable(f"decode failed ({failure.cause}) after {resumes} resumes: {failure}") from failure
                resumes += 1
                deadline = time.monotonic() + self._recovery.resume_wait_s
                self.recoveries.count("decode_resumes", failure.cause)
                lost = failure.replica or (ranking[0] if ranking else None)
                ranking = [r for r in ranking if r != lost]
                decode_request = _resume_request(request, sent, owed)
                wait_s = self._recovery.resume_wait_s
                logger.warning(
                    "request %s: decode failed (%s on %s): %s; resuming after %d tokens, %d owed",
                    request.request_id, failure.cause, lost, failure, len(sent), owed,
                )

    async def run_decode(
        self, decode_request: handoff_pb2.DecodeRequest, ranking: list[str], first_chunk_within: float | None = None
    ) -> AsyncIterator[DecodeChunk]:
        """One decode call's chunks; `_DecodeFailed` when its replica dies or its engine fails it.

        `first_chunk_within` bounds the wait for the first chunk (a resume waiting for a replica)."""
        stream = self._decode.options(stream=True, session_id=pin(ranking) if ranking else None).generate.remote(decode_request)
        replica = None
        try:
            chunks = aiter(stream)
            first = True
            while True:
                try:
                    if first and first_chunk_within is not None:
                        chunk = await asyncio.wait_for(anext(chunks), first_chunk_within)
                    else:
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                first = False
                replica = chunk.replica or replica
                if chunk.finish_reason == "error":
                    raise _DecodeFailed("decode_engine_error", "the decode engine failed the request (KV transfer or engine error)", replica)
                yield chunk
        except _REPLICA_GONE as exc:
            raise _DecodeFailed("decode_replica_lost", _reason(exc), replica) from exc
        except asyncio.TimeoutError as exc:
            stream.cancel()
            raise Unavailable(f"no decode replica took the resumed request within {first_chunk_within:g} s") from exc
        except (asyncio.CancelledError, GeneratorExit):
            stream.cancel()
            raise
        except _DecodeFailed:
            stream.cancel()
            raise
        except Exception as exc:
            stream.cancel()
            raise Unavailable(f"decode failed: {_reason(exc)}") from exc


def _resume_request(request: ValidatedRequest, sent: list[int], owed: int) -> handoff_pb2.DecodeRequest:
    """A colocated decode request that continues after the tokens already sent."""
    sampling = handoff_pb2.SamplingSpec()
    sampling.CopyFrom(request.sampling)
    sampling.max_tokens = owed
    return handoff_pb2.DecodeRequest(
        request_id=f"{request.request_id}-r{len(sent)}",
        prompt_token_ids=list(request.prompt_token_ids) + sent,
        sampling=sampling,
        trace_context=request.trace_context,
    )


async def _awaited(response):
    return await response


def _usage(prompt_tokens: int, completion_tokens: int, cached: int) -> inference_pb2.Usage:
    return inference_pb2.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, cached_prompt_tokens=cached)


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
