"""The load generator's workload, statistics and SLO verdicts (the load itself is in
benchmarks/bench_frontier.py against the real cluster)."""

from __future__ import annotations

import math

from pdserve.loadgen import RateResult, Workload, goodput, judge, percentiles, row


def test_workload_is_reproducible_and_shares_prefixes_within_groups():
    w = Workload(groups=3, shared_words=20, question_words=5, seed=1)
    first, again = w.prompts(30), w.prompts(30)
    assert first == again
    systems = {p.split("\nRequest")[0] for p in first}
    assert len(systems) == 3  # every request starts with one of the groups' system prompts
    assert len(set(first)) == 30  # and the questions make each prompt distinct


def test_percentiles():
    values = [float(i) for i in range(1, 101)]
    assert percentiles(values) == {"p50": 51.0, "p90": 91.0, "p99": 100.0}
    assert all(math.isnan(v) for v in percentiles([]).values())


def result(rate, ttft_p90, itl_p90, completed=10, sent=10):
    stats = lambda p90: {"p50": p90 / 2, "p90": p90, "p99": p90 * 2}  # noqa: E731
    return RateResult(rate, sent, completed, {} if completed == sent else {"UNAVAILABLE": sent - completed}, 10.0,
                      completed / 10, 40.0, stats(ttft_p90), stats(itl_p90), stats(5.0), 1.0)


def test_slo_verdict_needs_both_bounds_and_no_failures():
    assert judge(result(1, 1.0, 0.05), slo_ttft_p90=2.0, slo_itl_p90=0.1) is True
    assert judge(result(1, 3.0, 0.05), slo_ttft_p90=2.0, slo_itl_p90=0.1) is False
    assert judge(result(1, 1.0, 0.20), slo_ttft_p90=2.0, slo_itl_p90=0.1) is False
    assert judge(result(1, 1.0, 0.05, completed=9), slo_ttft_p90=2.0, slo_itl_p90=0.1) is False
    assert judge(result(1, 1.0, 0.05), None, None) is None


def test_goodput_is_the_highest_rate_meeting_the_slo():
    results = [result(r, t, 0.05) for r, t in ((0.5, 0.5), (1.0, 1.5), (2.0, 9.0))]
    for r in results:
        r.meets_slo = judge(r, 2.0, 0.1)
    assert goodput(results).offered_rps == 1.0
    assert goodput([results[2]]) is None
    assert "no" in row(results[2]) and "UNAVAILABLE" not in row(results[2])
