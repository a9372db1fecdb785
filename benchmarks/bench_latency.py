"""TTFT and output tokens/s of a pdserve cluster at a few concurrency levels.

Starts the cluster from a config (or uses a running one with --address), sends greedy requests to
the router's gRPC ingress on loopback, and prints per-level figures:
    TTFT p50/p90, inter-token latency p50, per-request decode tokens/s, aggregate output tokens/s.
Bounded: every level sends a fixed number of requests and stops.

    python benchmarks/bench_latency.py --config configs/local.yaml [--levels 1,4,8] [--requests 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pdserve.client import InferenceClient, make_request

PROMPT = (
    "You are reviewing an incident report from a serving cluster. "
    + "The decode pool saturated while a long prompt was being prefilled, and streams stalled. " * 12
    + "Summarise the root cause:"
)


@dataclass(slots=True)
class Sample:
    ttft: float
    total: float
    tokens: int
    gaps: list[float]


def one_request(client: InferenceClient, max_tokens: int, i: int) -> Sample:
    request = make_request(PROMPT + f" (case {i})", max_tokens=max_tokens, temperature=0.0)
    started = time.perf_counter()
    stamps, tokens = [], 0
    for response in client.stream(request):
        stamps.append(time.perf_counter())
        tokens += len(response.token_ids)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return Sample(ttft=stamps[0] - started, total=stamps[-1] - started, tokens=tokens, gaps=gaps)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_level(address: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    clients = [InferenceClient(address) for _ in range(concurrency)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        samples = list(pool.map(lambda i: one_request(clients[i % concurrency], max_tokens, i), range(requests)))
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    gaps = [g for s in samples for g in s.gaps]
    return {
        "concurrency": concurrency,
        "requests": requests,
        "ttft_p50_ms": 1000 * pct([s.ttft for s in samples], 0.5),
        "ttft_p90_ms": 1000 * pct([s.ttft for s in samples], 0.9),
        "itl_p50_ms": 1000 * pct(gaps, 0.5) if gaps else 0.0,
        "per_request_tok_s": statistics.mean((s.tokens - 1) / max(s.total - s.ttft, 1e-6) for s in samples),
        "output_tok_s": sum(s.tokens for s in samples) / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--address", help="use a running cluster instead of starting one")
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--requests", type=int, default=8, help="requests per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    cluster = None
    address = args.address
    if not address:
        from pdserve.cluster import LocalCluster
        from pdserve.config import load_config

        cluster = LocalCluster(load_config(args.config)).start()
        address = cluster.grpc_address
    try:
        one_request(InferenceClient(address), 4, -1)  # warm-up
        header = f"{'conc':>4} {'reqs':>4} {'TTFT p50':>9} {'TTFT p90':>9} {'ITL p50':>8} {'tok/s/req':>9} {'tok/s':>7}"
        print(f"prompt {len(PROMPT.split())} words, {args.max_tokens} output tokens, greedy, gRPC on {address}")
        print(header)
        for level in [int(x) for x in args.levels.split(",")]:
            r = run_level(address, level, max(args.requests, level), args.max_tokens)
            print(
                f"{r['concurrency']:>4} {r['requests']:>4} {r['ttft_p50_ms']:>7.0f}ms {r['ttft_p90_ms']:>7.0f}ms "
                f"{r['itl_p50_ms']:>6.1f}ms {r['per_request_tok_s']:>9.1f} {r['output_tok_s']:>7.1f}",
                flush=True,
            )
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
