"""Factories for unit tests: configs, requests, and fake Serve handles (no Ray, no engine)."""

from __future__ import annotations

import asyncio
from typing import Any

from pdserve.config import ClusterConfig
from pdserve.v1 import handoff_pb2
from router.validation import Limits, ValidatedRequest


def make_config(**overrides: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(overrides)


def make_limits(max_prompt_tokens: int = 100, max_output_tokens: int = 50, max_model_len: int = 128) -> Limits:
    return Limits(max_prompt_tokens=max_prompt_tokens, max_output_tokens=max_output_tokens, max_model_len=max_model_len)


def make_validated(prompt_len: int = 100, max_tokens: int = 4) -> ValidatedRequest:
    return ValidatedRequest(
        request_id="r1",
        prompt_token_ids=list(range(prompt_len)),
        sampling=handoff_pb2.SamplingSpec(max_tokens=max_tokens, temperature=0.0, top_p=1.0),
        tenant="",
        priority=0,
    )


def vllm_prefill_params(**overrides: Any) -> dict:
    """kv_transfer_params as vLLM 0.32's NixlConnector returns them from a prefill (seen on this machine)."""
    params = {
        "do_remote_prefill": True,
        "do_remote_decode": False,
        "remote_block_ids": [[1, 2, 3]],
        "remote_engine_id": "prefill-abc",
        "remote_request_id": "r1-p1",
        "remote_host": "127.0.0.1",
        "remote_port": 15601,
        "tp_size": 1,
        "dcp_size": 1,
        "pp_size": 1,
        "remote_num_tokens": 376,
        "remote_blocks_expiry_time": None,
        "transfer_mode": "pull",
        "remote_prefill_cached_tokens": 0,
    }
    params.update(overrides)
    return params


class FakeResponse:
    """Stands in for a Serve DeploymentResponse: awaitable, cancellable."""

    def __init__(self, result=None, error: BaseException | None = None, delay: float = 0.0):
        self._result, self._error, self._delay = result, error, delay
        self.cancelled = False

    def __await__(self):
        return self._run().__await__()

    async def _run(self):
        if self._delay:
            await asyncio.sleep(self._delay)
        if self._error is not None:
            raise self._error
        return self._result

    def cancel(self):
        self.cancelled = True


class FakeStream:
    """Stands in for a streaming Serve DeploymentResponseGenerator."""

    def __init__(self, chunks, error: BaseException | None = None, delay: float = 0.0):
        self._chunks, self._error, self._delay = list(chunks), error, delay
        self.cancelled = False

    def __aiter__(self):
        return self._gen()

    async def _gen(self):
        if self._delay:
            await asyncio.sleep(self._delay)
        for chunk in self._chunks:
            yield chunk
        if self._error is not None:
            raise self._error

    def cancel(self):
        self.cancelled = True


class FakeMethod:
    def __init__(self, outcomes):
        self._outcomes = list(outcomes)
        self.calls = []

    def remote(self, request):
        self.calls.append(request)
        outcome = self._outcomes.pop(0)
        return outcome


class FakePrefillHandle:
    def __init__(self, *outcomes):
        self.prefill = FakeMethod(outcomes)
        self.pins = []

    def options(self, session_id=None, **_):
        self.pins.append(session_id)
        return self


class FakeDecodeHandle:
    """One FakeStream per generate call, in order."""

    def __init__(self, *streams: FakeStream):
        self.stream = streams[0]
        self.generate = FakeMethod(streams)
        self.pins = []

    def options(self, session_id=None, **_):
        self.pins.append(session_id)
        return self
