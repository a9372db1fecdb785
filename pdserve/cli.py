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
    check = sub.add_parser("check-config", help="validate a cluster config")
    check.add_argument("config")
    check.set_defaults(func=cmd_check_config)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
