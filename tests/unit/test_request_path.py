"""The request path across pools, with fake Serve handles (no Ray, no engines)."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from decode_service.deployment import DecodeChunk
from kv_transfer.handoff import handoff_from_vllm
from pdserve.v1 import handoff_pb2, inference_pb2
from router.errors import Unavailable
from router.request_path import PathSettings, RequestPath
from router.scheduling.scheduler import NoReplicas
from router.scheduling.types import Decision
from tests.unit.factories import (
    FakeDecodeHandle,
    FakePrefillHandle,
    FakeResponse,
    FakeStream,
    make_validated,
    vllm_prefill_params,
)


def _prefill_result(finished=False, finish_reason="length"):
    return handoff_pb2.PrefillResult(
        request_id="r1",
        first_token_id=11,
        first_token_text=" A",
        finished=finished,
        finish_reason=finish_reason,
        handoff=handoff_from_vllm(vllm_prefill_params(), "NixlConnector"),
        prompt_tokens=100,
    )


def _chunks(*ids, finish="length"):
    out = [DecodeChunk(token_ids=[i], text=f" t{i}", prompt_tokens=100) for i in ids]
    out[-1].finish_reason = finish
    return out


async def _collect(path, request):
    return [r async for r in path.generate(request)]


class FakePlacement:
    """Stands in for router.placement.Placement: colocates prompts under `threshold` tokens."""

    def __init__(self, threshold=64, error=None):
        self.threshold, self.error = threshold, error
        self.tracked = []

    async def place(self, token_ids):
        if self.error:
            raise self.error
        if len(token_ids) < self.threshold:
            return Decision("colocated", decode=["d1", "d2"], prefill=[])
        return Decision("disaggregated", decode=["d1", "d2"], prefill=["p1", "p2"])

    def track(self, *replicas):
        import contextlib

        self.tracked.append(replicas)
        return contextlib.nullcontext()


def _path(prefill, decode, threshold=64, placement=None):
    return RequestPath(prefill, decode, placement or FakePlacement(threshold), PathSettings(prefill_timeout_s=1))


def test_disaggregated_request_streams_first_token_then_decode():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12, 13)))
    responses = asyncio.run(_collect(_path(prefill, decode), make_validated(100)))
    assert [list(r.token_ids) for r in responses] == [[11], [12], [13]]
    assert responses[0].route == "disaggregated"
    assert responses[-1].finish_reason == inference_pb2.FINISH_REASON_LENGTH
    assert responses[-1].usage.completion_tokens == 3
    sent = decode.generate.calls[0]
    assert sent.first_token_id == 11 and sent.first_token_text == " A"
    assert sent.handoff.remote_engine_id == "prefill-abc"


def test_short_prompt_is_served_by_decode_alone():
    prefill = FakePrefillHandle()
    decode = FakeDecodeHandle(FakeStream(_chunks(5, 6)))
    responses = asyncio.run(_collect(_path(prefill, decode), make_validated(10)))
    assert prefill.prefill.calls == []
    assert responses[0].route == "colocated"
    assert not decode.generate.calls[0].HasField("handoff")
    assert responses[-1].usage.completion_tokens == 2


def test_first_token_that_finishes_skips_decode():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result(finished=True, finish_reason="stop")))
    decode = FakeDecodeHandle(FakeStream([]))
    responses = asyncio.run(_collect(_path(prefill, decode), make_validated(100)))
    assert len(responses) == 1
    assert responses[0].finish_reason == inference_pb2.FINISH_REASON_STOP
    assert decode.generate.calls == []


def test_engine_error_becomes_unavailable_not_an_empty_success():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream([DecodeChunk(finish_reason="error")]))
    with pytest.raises(Unavailable, match="failed the request"):
        asyncio.run(_collect(_path(prefill, decode), make_validated(100)))


def test_lost_prefill_replica_is_retried_on_another():
    prefill = FakePrefillHandle(FakeResponse(error=ActorDiedError()), FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12)))
    responses = asyncio.run(_collect(_path(prefill, decode), make_validated(100)))
    assert len(prefill.prefill.calls) == 2
    assert [list(r.token_ids) for r in responses] == [[11], [12]]


def test_prefill_that_keeps_failing_is_unavailable():
    prefill = FakePrefillHandle(FakeResponse(error=ActorDiedError()), FakeResponse(error=ActorDiedError()))
    with pytest.raises(Unavailable, match="failed 2 times"):
        asyncio.run(_collect(_path(prefill, FakeDecodeHandle(FakeStream([]))), make_validated(100)))


def test_prefill_that_never_answers_times_out_as_unavailable():
    slow = FakeResponse(_prefill_result(), delay=5)
    prefill = FakePrefillHandle(slow)
    with pytest.raises(Unavailable, match="within 1 s"):
        asyncio.run(_collect(_path(prefill, FakeDecodeHandle(FakeStream([]))), make_validated(100)))
    assert slow.cancelled


def test_lost_decode_replica_mid_stream_is_unavailable():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12, 13)[:1], error=ActorDiedError()))
    decode.stream._chunks[0].finish_reason = None
    with pytest.raises(Unavailable, match="decode replica lost"):
        asyncio.run(_collect(_path(prefill, decode), make_validated(100)))


def test_no_live_replica_is_unavailable():
    path = _path(FakePrefillHandle(), FakeDecodeHandle(FakeStream([])), placement=FakePlacement(error=NoReplicas("no decode replica")))
    with pytest.raises(Unavailable, match="no decode replica"):
        asyncio.run(_collect(path, make_validated(100)))


def test_calls_are_pinned_to_the_scheduler_ranking_and_tracked():
    placement = FakePlacement()
    prefill = FakePrefillHandle(FakeResponse(error=ActorDiedError()), FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12)))
    asyncio.run(_collect(_path(prefill, decode, placement=placement), make_validated(100)))
    assert prefill.pins == ["pin:p1,p2", "pin:p2"]  # the retry skips the replica that was lost
    assert decode.pins == ["pin:d1,d2"]
    assert placement.tracked == [("d1", "p1")]
