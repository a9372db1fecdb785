"""The load generator against the real cluster, over both APIs (short runs: the frontier itself is
benchmarks/bench_frontier.py)."""

from __future__ import annotations

import asyncio

import pytest

from pdserve import loadgen

pytestmark = pytest.mark.integration

SMALL = loadgen.Workload(groups=2, shared_words=40, question_words=8, output_tokens=8, seed=3)


@pytest.mark.parametrize("api", ["grpc", "http"])
def test_a_short_run_measures_every_request(cluster, api):
    address = cluster.grpc_address if api == "grpc" else cluster.http_address
    result = asyncio.run(loadgen.run_rate(address, SMALL, rate=4.0, duration_s=1.5))
    assert result.sent == 6 and result.completed == 6, result.errors
    assert 0 < result.ttft_s["p50"] <= result.e2e_s["p90"]
    assert result.itl_s["p50"] > 0 and result.output_tok_s > 0
    assert 0.0 <= result.disaggregated_share <= 1.0  # which route depends on what decode already caches
    result.meets_slo = loadgen.judge(result, slo_ttft_p90=60.0, slo_itl_p90=10.0)
    assert result.meets_slo is True and loadgen.goodput([result]) is result
