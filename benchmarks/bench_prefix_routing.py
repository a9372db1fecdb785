"""Prefix-aware routing against round-robin, on one cluster, in one go.

The cluster: 2 prefill replicas (one core each) and 1 decode replica of the embedded model, with a
deliberately small prefill KV cache (`--blocks` per replica). The workload: `--groups` groups of
requests, each group sharing a long system prompt (about 8 blocks of 128 tokens), with a distinct
question per request, arriving in rounds (every group once per round, in a fresh random order).
The defaults (17 groups, 72 blocks) put it in the regime that decides whether routing matters: the
system prompts in use (128 full blocks) do not fit in one replica's cache, but half of them (about
64 blocks) do. Round-robin makes both replicas cache
every prompt, and each evicts a prompt before it comes back; prefix-aware routing gives each prompt
one home. With everything fitting in one cache (e.g. `--groups 7`) both policies hit, and the gap
is only each group's first miss on each replica.

Each phase starts from empty prefix caches and the same workload, and differs only in the prefill
profile (swapped live on the router):
    round_robin   picker round_robin, no scorers
    prefix_aware  prefix_cache (weight 2) + queue (1) + cache_spread (0.5), picker max_score
Every request is disaggregated in both phases (decider threshold 0), so the prefill pool sees all.
Printed: prefill prefix-cache hit rate (engine-reported hits / queried tokens) and TTFT p50/p90,
side by side, with the ratios. Targets: hit rate >= 2x round-robin's, TTFT p50 <= 0.6x.

    python benchmarks/bench_prefix_routing.py [--groups 17] [--per-group 5] [--blocks 72] [--order rounds|shuffled] [--seed 11]
"""

from __future__ import annotations

import argparse
import random
import time
from concurrent.futures import ThreadPoolExecutor

from cluster_tools import reset_prefix_caches
from pdserve.client import InferenceClient, make_request

TOPICS = ["billing", "shipping", "returns", "security", "onboarding", "payroll", "travel", "hardware", "legal", "research"]


def system_prompt(group: int, words: int) -> str:
    topic = TOPICS[group % len(TOPICS)]
    body = " ".join(f"{topic}-rule-{group}-{i}" for i in range(words))
    return f"You are the {topic} assistant of team {group}. Follow these rules exactly: {body}."


def workload(groups: int, per_group: int, words: int, seed: int = 11, order: str = "rounds") -> list[tuple[int, str]]:
    """Every group's requests in a fixed pseudo-random order (the same in both phases).

    "rounds": steady multi-tenant traffic: each round every group sends one request, the groups in
    a fresh shuffled order each round. "shuffled": all requests in one shuffle, so a group's
    requests can bunch up or spread out by chance.
    An odd group count matters for interleaved orders: with an even one, round-robin over two
    replicas can send group g to the same replica every time, perfect affinity by accident."""
    prompts = {g: system_prompt(g, words) for g in range(groups)}
    rng = random.Random(seed)

    def request(g: int, q: int) -> tuple[int, str]:
        return g, f"{prompts[g]}\nUser question {q} for team {g}: what is the first rule?\nAnswer:"

    if order == "rounds":
        items = []
        for q in range(per_group):
            round_groups = list(range(groups))
            rng.shuffle(round_groups)
            items += [request(g, q) for g in round_groups]
        return items
    items = [request(g, q) for q in range(per_group) for g in range(groups)]
    rng.shuffle(items)
    return items


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_phase(address: str, router, cluster_reset, scheduling: dict, requests, concurrency: int, max_tokens: int) -> dict:
    router.configure_scheduling.remote(scheduling).result(timeout_s=30)
    cluster_reset()
    before = router.pool_figures.remote().result(timeout_s=30)["prefill"]
    client = InferenceClient(address)

    def one(item):
        _, prompt = item
        started = time.perf_counter()
        first = None
        for response in client.stream(make_request(prompt, max_tokens=max_tokens, temperature=0.0)):
            if first is None:
                first = time.perf_counter() - started
                route = response.route
        return first, route

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, requests))
    client.close()
    time.sleep(1.0)  # one more load report from every replica
    after = router.pool_figures.remote().result(timeout_s=30)["prefill"]
    hits = sum(after[r].get("prefix_cache_hits", 0) - before.get(r, {}).get("prefix_cache_hits", 0) for r in after)
    queries = sum(after[r].get("prefix_cache_queries", 0) - before.get(r, {}).get("prefix_cache_queries", 0) for r in after)
    ttfts = [r[0] for r in results]
    return {
        "hit_rate": hits / queries if queries else 0.0,
        "ttft_p50": pct(ttfts, 0.5),
        "ttft_p90": pct(ttfts, 0.9),
        "disaggregated": sum(r[1] == "disaggregated" for r in results),
        "requests": len(results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=17)
    parser.add_argument("--per-group", type=int, default=5)
    parser.add_argument("--words", type=int, default=120, help="system prompt length in words (about 5 tokens each)")
    parser.add_argument("--blocks", type=int, default=72, help="KV blocks (128 tokens) per prefill replica")
    parser.add_argument("--seed", type=int, default=11, help="workload shuffle seed")
    parser.add_argument("--order", choices=("rounds", "shuffled"), default="rounds", help="request order (see workload())")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=4)
    args = parser.parse_args()

    from ray import serve

    from pdserve.cluster import LocalCluster
    from pdserve.config import load_config

    base = load_config("configs/local.yaml")
    prefill = base.prefill.model_copy(
        update={
            "replicas": 2,
            "engine": base.prefill.engine.model_copy(
                update={"cpu_threads_bind": ["0", "1"], "extra_args": {"num_gpu_blocks_override": args.blocks}}
            ),
        }
    )
    scheduling = base.router.scheduling.model_copy(update={"min_uncached_tokens_to_disaggregate": 0})
    config = base.model_copy(
        update={"name": "pdserve-bench", "prefill": prefill, "router": base.router.model_copy(update={"scheduling": scheduling})}
    )
    requests = workload(args.groups, args.per_group, args.words, args.seed, args.order)
    print(f"starting 2 prefill ({args.blocks} blocks each) + 1 decode replica ...", flush=True)
    with LocalCluster(config) as cluster:
        router = serve.get_deployment_handle("Router", app_name=config.name)
        def reset_caches():
            reset_prefix_caches(config.name)

        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(config.model.resolved_path())
        prompt_tokens = [len(tokenizer.encode(prompt)) for _, prompt in requests]
        shared_tokens = [len(tokenizer.encode(system_prompt(g, args.words))) for g in range(args.groups)]
        shared_blocks = sum(t // config.block_size for t in shared_tokens)
        print(f"workload: {args.groups} groups x {args.per_group} requests ({args.order}, seed {args.seed}), prompts {min(prompt_tokens)}-{max(prompt_tokens)} "
              f"tokens, shared system prompts {shared_blocks} full blocks in all ({args.blocks} per replica), "
              f"concurrency {args.concurrency}, {args.max_tokens} output tokens", flush=True)
        base_scheduling = scheduling.model_dump()
        phases = {
            "round_robin": {**base_scheduling, "prefill": {"filters": {}, "scorers": {}, "picker": "round_robin"}},
            "prefix_aware": {**base_scheduling, "prefill": {"filters": {"queue_depth": {"max_waiting": 64}},
                                                            "scorers": {"prefix_cache": 2.0, "queue": 1.0, "cache_spread": 0.5},
                                                            "picker": "max_score"}},
        }
        results = {}
        for name, spec in phases.items():
            results[name] = run_phase(cluster.grpc_address, router, reset_caches, spec, requests, args.concurrency, args.max_tokens)
            r = results[name]
            print(f"{name:>13}: hit rate {100 * r['hit_rate']:5.1f}%  TTFT p50 {1000 * r['ttft_p50']:6.0f} ms  "
                  f"p90 {1000 * r['ttft_p90']:6.0f} ms  ({r['disaggregated']}/{r['requests']} disaggregated)", flush=True)
        rr, pa = results["round_robin"], results["prefix_aware"]
        hit_ratio = pa["hit_rate"] / rr["hit_rate"] if rr["hit_rate"] else float("inf")
        print(f"prefix_aware / round_robin: hit rate x{hit_ratio:.2f} (target >= 2), "
              f"TTFT p50 x{pa['ttft_p50'] / rr['ttft_p50']:.2f} (target <= 0.6), "
              f"TTFT p90 x{pa['ttft_p90'] / rr['ttft_p90']:.2f}")


if __name__ == "__main__":
    main()
