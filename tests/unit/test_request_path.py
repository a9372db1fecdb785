"""The request path across pools, with fake Serve handles (no Ray, no engines)."""

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from decode_service.deployment import DecodeChunk
from kv_transfer.handoff import handoff_from_vllm
from pdserve.v1 import handoff_pb2, inference_pb2
from router.errors import Unavailable
from pdserve.config import RecoverySpec
from router.request_path import RequestPath
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


def _chunks(*ids, finish="length", replica="d1"):
    out = [DecodeChunk(token_ids=[i], text=f" t{i}", prompt_tokens=100, replica=replica) for i in ids]
    out[-1].finish_reason = finish
    return out


async def _collect(path, request):
    return [r async for r in path.generate(request)]


class FakePlacement:
    """Stands in for router.placement.Placement: colocates prompts under `threshold` tokens."""

    def __init__(self, threshold=64, error=None, prefill=("p1", "p2")):
        self.threshold, self.error, self.prefill = threshold, error, list(prefill)
        self.tracked = []

    async def place(self, token_ids, max_tokens=0):
        if self.error:
            raise self.error
        if len(token_ids) < self.threshold:
            return Decision("colocated", decode=["d1", "d2"], prefill=[])
        return Decision("disaggregated", decode=["d1", "d2"], prefill=self.prefill)

    def track(self, *replicas):
        import contextlib

        self.tracked.append(replicas)
        return contextlib.nullcontext()


def _path(prefill, decode, threshold=64, placement=None, **recovery):
    spec = RecoverySpec(**{"prefill_timeout_s": 1, "resume_wait_s": 1, **recovery})
    return RequestPath(prefill, decode, placement or FakePlacement(threshold), spec)


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


def test_first_token_that_finishes_ends_the_stream_and_decode_only_releases_the_blocks():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result(finished=True, finish_reason="stop")))
    decode = FakeDecodeHandle(FakeStream(_chunks(99)))

    async def run():
        responses = await _collect(_path(prefill, decode), make_validated(100))
        await asyncio.sleep(0.05)  # the background release
        return responses

    responses = asyncio.run(run())
    assert len(responses) == 1 and list(responses[0].token_ids) == [11]
    assert responses[0].finish_reason == inference_pb2.FINISH_REASON_STOP
    release = decode.generate.calls[0]  # a one-token pull of the held blocks, its output dropped
    assert release.handoff.remote_engine_id == "prefill-abc" and release.sampling.max_tokens == 1
    assert release.request_id == "r1-release"


def test_engine_error_that_keeps_failing_becomes_unavailable_not_an_empty_success():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    errors = [FakeStream([DecodeChunk(finish_reason="error")]) for _ in range(3)]
    path = _path(prefill, FakeDecodeHandle(*errors))
    with pytest.raises(Unavailable, match="decode_engine_error"):
        asyncio.run(_collect(path, make_validated(100)))
    assert path.recoveries.decode_resumes == 2 and path.recoveries.unrecovered == 1


def test_lost_prefill_replica_is_retried_on_another():
    prefill = FakePrefillHandle(FakeResponse(error=ActorDiedError()), FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12)))
    path = _path(prefill, decode)
    responses = asyncio.run(_collect(path, make_validated(100)))
    assert len(prefill.prefill.calls) == 2
    assert [list(r.token_ids) for r in responses] == [[11], [12]]
    assert path.recoveries.prefill_retries == 1


@pytest.mark.parametrize("error", [ActorDiedError(), RuntimeError("prefill engine failed request r1")])
def test_prefill_pool_that_keeps_failing_falls_back_to_decode_prefilling_itself(error):
    prefill = FakePrefillHandle(FakeResponse(error=error), FakeResponse(error=error))
    decode = FakeDecodeHandle(FakeStream(_chunks(5, 6, 7)))
    path = _path(prefill, decode)
    responses = asyncio.run(_collect(path, make_validated(100, max_tokens=3)))
    assert [list(r.token_ids) for r in responses] == [[5], [6], [7]]
    assert responses[0].route == "colocated"
    assert not decode.generate.calls[0].HasField("handoff")
    assert responses[-1].usage.completion_tokens == 3
    assert path.recoveries.prefill_fallbacks == 1


def test_lost_only_prefill_replica_falls_back_at_once_instead_of_waiting_for_its_replacement():
    prefill = FakePrefillHandle(FakeResponse(error=ActorDiedError()))
    decode = FakeDecodeHandle(FakeStream(_chunks(5)))
    path = _path(prefill, decode, placement=FakePlacement(prefill=["p1"]))
    responses = asyncio.run(_collect(path, make_validated(100, max_tokens=1)))
    assert len(prefill.prefill.calls) == 1 and [list(r.token_ids) for r in responses] == [[5]]


def test_prefill_that_never_answers_times_out_as_unavailable():
    slow = FakeResponse(_prefill_result(), delay=5)
    prefill = FakePrefillHandle(slow)
    with pytest.raises(Unavailable, match="within 1 s"):
        asyncio.run(_collect(_path(prefill, FakeDecodeHandle(FakeStream([]))), make_validated(100)))
    assert slow.cancelled


@pytest.mark.parametrize(
    "failure, cause",
    [
        (FakeStream(_chunks(12, 13, finish=None), error=ActorDiedError()), "decode_replica_lost"),
        (FakeStream(_chunks(12, 13, finish=None) + [DecodeChunk(finish_reason="error", replica="d1")]), "decode_engine_error"),
    ],
)
def test_failed_decode_mid_stream_resumes_from_the_tokens_sent(failure, cause):
    """The client sees one unbroken stream: 11 (prefill), 12, 13 (lost decode), 14, 15 (resumed)."""
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    resumed = FakeStream(_chunks(14, 15, replica="d2"))
    decode = FakeDecodeHandle(failure, resumed)
    path = _path(prefill, decode)
    responses = asyncio.run(_collect(path, make_validated(100, max_tokens=5)))
    assert [t for r in responses for t in r.token_ids] == [11, 12, 13, 14, 15]
    resume = decode.generate.calls[1]
    assert list(resume.prompt_token_ids) == list(range(100)) + [11, 12, 13]  # prompt + every token sent
    assert resume.sampling.max_tokens == 2 and not resume.HasField("handoff") and resume.first_token_id == 0
    assert decode.pins == ["pin:d1,d2", "pin:d2"]  # the replica that failed is not asked again
    assert responses[-1].usage.prompt_tokens == 100 and responses[-1].usage.completion_tokens == 5
    assert path.recoveries.snapshot()["by_cause"] == {cause: 1}


def test_resume_reaching_a_replica_serve_has_not_dropped_yet_asks_again_without_using_a_resume():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    lost = FakeStream(_chunks(12, finish=None), error=ActorDiedError())
    stale = [FakeStream([], error=ActorDiedError()) for _ in range(3)]
    decode = FakeDecodeHandle(lost, *stale, FakeStream(_chunks(13, replica="d2")))
    path = _path(prefill, decode, decode_resumes=1, resume_wait_s=30)
    responses = asyncio.run(_collect(path, make_validated(100, max_tokens=3)))
    assert [t for r in responses for t in r.token_ids] == [11, 12, 13]
    assert len(decode.generate.calls) == 5 and path.recoveries.decode_resumes == 1


def test_resume_that_finds_no_decode_replica_in_time_is_unavailable():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12, finish=None), error=ActorDiedError()), FakeStream(_chunks(13), delay=5))
    with pytest.raises(Unavailable, match="within 1 s"):
        asyncio.run(_collect(_path(prefill, decode), make_validated(100, max_tokens=5)))
    assert decode.generate.calls[1].sampling.max_tokens == 3


def test_no_resume_when_resumes_are_switched_off():
    prefill = FakePrefillHandle(FakeResponse(_prefill_result()))
    decode = FakeDecodeHandle(FakeStream(_chunks(12, finish=None), error=ActorDiedError()))
    with pytest.raises(Unavailable, match="decode_replica_lost"):
        asyncio.run(_collect(_path(prefill, decode, decode_resumes=0), make_validated(100)))


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
