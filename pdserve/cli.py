"""pdserve: bring the cluster up, talk to it, check a config.

    pdserve up [--config configs/local.yaml] [--demo PROMPT] [--exit-after-demo]
    pdserve generate PROMPT [--address 127.0.0.1:50051] [--chat] [--max-tokens N] [--temperature T]
    pdserve check-config configs/gpu-cluster.yaml
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "local.yaml"
DEMO_PROMPT = "Explain in two sentences why prefill and decode run on separate machines."


def _stream_to_terminal(address: str, request) -> int:
    import grpc

    from pdserve.client import InferenceClient

    started = time.perf_counter()
    first_at = None
    with InferenceClient(address) as client:
        try:
            for response in client.stream(request):
                if first_at is None:
                    first_at = time.perf_counter()
                    print(f"[route: {response.route}]", file=sys.stderr)
                sys.stdout.write(response.text)
                sys.stdout.flush()
                last = response
        except grpc.RpcError as exc:
            print(f"\nerror: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    total = time.perf_counter() - started
    usage = last.usage
    print(
        f"\n[{usage.completion_tokens} tokens; prompt {usage.prompt_tokens}; "
        f"TTFT {1000 * (first_at - started):.0f} ms; {total:.2f} s total]",
        file=sys.stderr,
    )
    return 0


def cmd_up(args) -> int:
    from pdserve.client import make_request
    from pdserve.cluster import LocalCluster
    from pdserve.config import load_config

    config = load_config(args.config)
    print(f"starting {config.name}: {config.prefill.replicas} prefill + {config.decode.replicas} decode replica(s) "
          f"of {config.model.served_name}; engines take a minute on CPU ...", file=sys.stderr)
    cluster = LocalCluster(config).start()
    try:
        print(f"serving pdserve.v1.Inference (gRPC) on {cluster.grpc_address}, "
              f"the OpenAI API on {cluster.http_address}/v1", file=sys.stderr)
        if args.demo:
            print(f"demo request (chat): {args.demo}", file=sys.stderr)
            _stream_to_terminal(cluster.grpc_address, make_request(chat=[("user", args.demo)], max_tokens=64))
        if args.exit_after_demo:
            return 0
        print(f"try: .venv/bin/pdserve generate --address {cluster.grpc_address} 'Hello'\n"
              f"  or: curl {cluster.http_address}/v1/chat/completions -H 'Content-Type: application/json' "
              f"-d '{{\"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}], \"max_tokens\": 32}}'"
              f"   (Ctrl-C stops)", file=sys.stderr)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
        return 0
    finally:
        cluster.stop()


def cmd_generate(args) -> int:
    from pdserve.client import make_request

    if args.chat:
        request = make_request(chat=[("user", args.prompt)], max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    else:
        request = make_request(args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    return _stream_to_terminal(args.address, request)


def cmd_check_config(args) -> int:
    from pdserve.config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    def size(pool):
        a = pool.autoscaling
        return f"{a.min_replicas}-{a.max_replicas} (autoscaling)" if a else str(pool.replicas)

    print(f"{args.config}: ok ({size(config.prefill)} prefill, {size(config.decode)} decode, {config.prefill.engine.device})")
    return 0


def cmd_loadgen(args) -> int:
    import asyncio

    from pdserve import loadgen

    workload = loadgen.Workload(groups=args.groups, shared_words=args.shared_words, question_words=args.question_words,
                                output_tokens=args.output_tokens, seed=args.seed)
    rates = [float(r) for r in args.rates.split(",")]
    print(f"open-loop Poisson load on {args.address}: rates {rates} req/s, {args.duration:g} s each; {workload}", flush=True)
    results = asyncio.run(loadgen.sweep(args.address, workload, rates, args.duration, args.slo_ttft_p90, args.slo_itl_p90,
                                        report=lambda line: print(line, flush=True)))
    best = loadgen.goodput(results)
    if args.slo_ttft_p90 is not None or args.slo_itl_p90 is not None:
        slo = f"TTFT p90 <= {args.slo_ttft_p90} s, ITL p90 <= {args.slo_itl_p90} s"
        print(f"goodput under SLO ({slo}): " + (f"{best.offered_rps:g} req/s, {best.output_tok_s:.1f} output tok/s"
                                                  if best else "no rate met it"))
    if args.out:
        loadgen.save(args.out, results, address=args.address, workload=vars(args))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pdserve", description="Disaggregated prefill/decode serving on Ray Serve + vLLM + NIXL")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the cluster from a config and serve")
    up.add_argument("--config", default=str(DEFAULT_CONFIG))
    up.add_argument("--demo", nargs="?", const=DEMO_PROMPT, default=None, help="stream one sample request once ready")
    up.add_argument("--exit-after-demo", action="store_true")
    up.set_defaults(func=cmd_up)
    gen = sub.add_parser("generate", help="stream a completion to the terminal")
    gen.add_argument("prompt")
    gen.add_argument("--address", default="127.0.0.1:50051")
    gen.add_argument("--chat", action="store_true", help="send the prompt as a user chat message")
    gen.add_argument("--max-tokens", type=int, default=64)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--seed", type=int, default=None)
    gen.set_defaults(func=cmd_generate)
    load = sub.add_parser("loadgen", help="open-loop load at several rates: latency/throughput frontier (pdserve/loadgen.py)")
    load.add_argument("--address", default="127.0.0.1:50051",
                      help="host:port for pdserve's gRPC API, or http://host:port for any OpenAI-compatible server")
    load.add_argument("--rates", default="0.25,0.5,1,2", help="offered request rates, requests/s, comma-separated")
    load.add_argument("--duration", type=float, default=30, help="seconds of arrivals per rate")
    load.add_argument("--groups", type=int, default=8, help="shared system prompts")
    load.add_argument("--shared-words", type=int, default=150)
    load.add_argument("--question-words", type=int, default=30)
    load.add_argument("--output-tokens", type=int, default=48)
    load.add_argument("--seed", type=int, default=7)
    load.add_argument("--slo-ttft-p90", type=float, default=None, help="seconds")
    load.add_argument("--slo-itl-p90", type=float, default=None, help="seconds")
    load.add_argument("--out", help="write every figure as JSON here")
    load.set_defaults(func=cmd_loadgen)
    check = sub.add_parser("check-config", help="validate a cluster config")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
