"""Latency/throughput frontier of the embedded default: disaggregated against colocated, one run.

Starts the cluster from a config once, then drives the same open-loop workload (pdserve/loadgen.py)
at each offered rate under two routing modes, swapped live on the router:
    disaggregated   the config's scheduling: long prompts prefill on the prefill pool, KV over NIXL
    colocated       decode serves every request alone (the prefill pool sits idle)
and prints, per mode, throughput and TTFT / ITL / end-to-end percentiles per rate, the goodput
under the SLO (the highest rate whose TTFT p90 and ITL p90 meet it, with nothing failed), and the
ratio of the two goodputs. On this 2-core machine the two modes use the same engines: the
comparison shows what moving prefill off the decode engine does to ITL and TTFT under load.

    python benchmarks/bench_frontier.py [--rates 0.5,1,2,3] [--duration 30] \\
        [--slo-ttft-p90 3] [--slo-itl-p90 0.15] [--out frontier.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json

from cluster_tools import reset_prefix_caches
from pdserve import loadgen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/local.yaml")
    parser.add_argument("--rates", default="0.5,1,2,3")
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--slo-ttft-p90", type=float, default=3.0)
    parser.add_argument("--slo-itl-p90", type=float, default=0.15)
    parser.add_argument("--output-tokens", type=int, default=48)
    parser.add_argument("--out", help="write every figure as JSON here")
    args = parser.parse_args()

    from ray import serve

    from pdserve.cluster import LocalCluster
    from pdserve.config import load_config

    config = load_config(args.config)
    rates = [float(r) for r in args.rates.split(",")]
    workload = loadgen.Workload(output_tokens=args.output_tokens)
    base = config.router.scheduling.model_dump()
    modes = {
        "disaggregated": base,
        "colocated": {**base, "min_uncached_tokens_to_disaggregate": 10**9},
    }
    print(f"{config.name}: {config.prefill.replicas} prefill + {config.decode.replicas} decode replica(s); {workload}; "
          f"SLO TTFT p90 <= {args.slo_ttft_p90} s, ITL p90 <= {args.slo_itl_p90} s", flush=True)
    all_results = {}
    with LocalCluster(config) as cluster:
        router = serve.get_deployment_handle("Router", app_name=config.name)
        asyncio.run(loadgen.run_rate(cluster.grpc_address, workload, 1.0, 2.0))  # warm-up
        for mode, scheduling in modes.items():
            router.configure_scheduling.remote(scheduling).result(timeout_s=30)
            reset_prefix_caches(config.name)  # both modes start from cold caches
            print(f"\n== {mode}", flush=True)
            all_results[mode] = asyncio.run(loadgen.sweep(
                cluster.grpc_address, workload, rates, args.duration, args.slo_ttft_p90, args.slo_itl_p90,
                report=lambda line: print(line, flush=True)))
    print()
    best = {mode: loadgen.goodput(results) for mode, results in all_results.items()}
    for mode, r in best.items():
        print(f"{mode:>13}: goodput " + (f"{r.offered_rps:g} req/s ({r.output_tok_s:.1f} output tok/s, "
                                          f"TTFT p90 {1000 * r.ttft_s['p90']:.0f} ms, ITL p90 {1000 * r.itl_s['p90']:.0f} ms)"
                                          if r else "none: no rate met the SLO"))
    d, c = best["disaggregated"], best["colocated"]
    if d and c:
        print(f"disaggregated / colocated goodput: x{d.offered_rps / c.offered_rps:.2f}")
    for rate in rates:
        pair = [next(r for r in all_results[m] if r.offered_rps == rate) for m in modes]
        print(f"at {rate:g} req/s: ITL p90 {1000 * pair[0].itl_s['p90']:.0f} vs {1000 * pair[1].itl_s['p90']:.0f} ms, "
              f"TTFT p90 {1000 * pair[0].ttft_s['p90']:.0f} vs {1000 * pair[1].ttft_s['p90']:.0f} ms (disaggregated vs colocated)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({m: [loadgen.asdict(r) for r in rs] for m, rs in all_results.items()}, f, indent=2)


if __name__ == "__main__":
    main()
