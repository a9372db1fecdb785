"""Load generator: where a cluster configuration sits on the latency/throughput frontier.

Open-loop load (Poisson arrivals at each offered rate, as real traffic arrives, so a slow cluster
meets a growing queue rather than a politely waiting client), one asyncio process, any number of
concurrent streams, over pdserve's gRPC API (`--address host:port`) or any OpenAI-compatible
server's streaming /v1/completions (`--address http://host:port`: pdserve's HTTP API, or vLLM's,
SGLang's, Dynamo's, with the same workload). Per rate it measures:
    achieved throughput (requests/s, output tokens/s), errors by status code,
    TTFT, inter-token latency (ITL) and end-to-end latency, p50/p90/p99,
and against an SLO (TTFT p90, ITL p90) says which rates the configuration sustains: the
highest such rate is its goodput, the point on the frontier.

    pdserve loadgen --address 127.0.0.1:50051 --rates 0.25,0.5,1,2 --duration 30 \\
        --slo-ttft-p90 2.0 --slo-itl-p90 0.15 [--out results.json]
    pdserve loadgen --address http://127.0.0.1:8000 ...      (any OpenAI-compatible server)

The workload is synthetic and reproducible (seeded): `--groups` tenants' system prompts shared by
their requests (`--shared-words` words each) plus a distinct question (`--question-words`), and
up to `--output-tokens` greedy tokens (no stop strings; the model's end of sequence can end one
earlier, so output tokens/s counts what was generated).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field

import grpc
import httpx

from pdserve.client import make_request
from pdserve.v1 import inference_pb2_grpc


@dataclass(frozen=True, slots=True)
class Workload:
    groups: int = 8
    shared_words: int = 150
    question_words: int = 30
    output_tokens: int = 48
    seed: int = 7

    def prompts(self, count: int) -> list[str]:
        rng = random.Random(self.seed)
        systems = [
            f"You are assistant {g} of team {g}. " + " ".join(f"policy-{g}-{i}" for i in range(self.shared_words))
            for g in range(self.groups)
        ]
        out = []
        for n in range(count):
            question = " ".join(rng.choice(_WORDS) for _ in range(self.question_words))
            out.append(f"{systems[rng.randrange(self.groups)]}\nRequest {n}: {question}\nAnswer:")
        return out


_WORDS = ("latency", "replica", "cache", "router", "token", "queue", "prefill", "decode", "block", "tenant",
          "transfer", "stream", "budget", "region", "failover", "metric", "batch", "window", "shard", "quota")


@dataclass(slots=True)
class RequestResult:
    ok: bool
    code: str = "OK"
    ttft: float = 0.0
    total: float = 0.0
    tokens: int = 0
    gaps: list[float] = field(default_factory=list)
    route: str = ""


@dataclass(slots=True)
class RateResult:
    offered_rps: float
    sent: int
    completed: int
    errors: dict[str, int]
    wall_s: float
    achieved_rps: float
    output_tok_s: float
    ttft_s: dict[str, float]
    itl_s: dict[str, float]
    e2e_s: dict[str, float]
    disaggregated_share: float
    meets_slo: bool | None = None


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p90": float("nan"), "p99": float("nan")}
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


async def _one(stub, prompt: str, output_tokens: int, timeout_s: float) -> RequestResult:
    request = make_request(prompt, max_tokens=output_tokens, temperature=0.0)
    request.stop[:] = []
    started = time.perf_counter()
    stamps, tokens, route = [], 0, ""
    try:
        async for response in stub.Generate(request, timeout=timeout_s):
            stamps.append(time.perf_counter())
            tokens += len(response.token_ids)
            route = route or response.route
    except grpc.aio.AioRpcError as exc:
        return RequestResult(ok=False, code=exc.code().name)
    if not stamps:
        return RequestResult(ok=False, code="EMPTY")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return RequestResult(ok=True, ttft=stamps[0] - started, total=stamps[-1] - started, tokens=tokens, gaps=gaps, route=route)


async def _one_http(client: httpx.AsyncClient, model: str, prompt: str, output_tokens: int, timeout_s: float) -> RequestResult:
    """One streamed OpenAI /v1/completions request; a token arrival is an event carrying text."""
    payload = {"model": model, "prompt": prompt, "max_tokens": output_tokens, "temperature": 0, "stream": True,
               "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    stamps, tokens = [], None
    try:
        async with client.stream("POST", "/v1/completions", json=payload, timeout=timeout_s) as response:
            if response.status_code != 200:
                return RequestResult(ok=False, code=f"HTTP_{response.status_code}")
            route = response.headers.get("x-pdserve-route", "")
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[len("data: ") :])
                if "error" in event:
                    return RequestResult(ok=False, code=f"HTTP_{event['error'].get('code', 'ERROR')}")
                if event.get("choices") and event["choices"][0].get("text"):
                    stamps.append(time.perf_counter())
                if event.get("usage"):
                    tokens = event["usage"].get("completion_tokens")
    except httpx.HTTPError as exc:
        return RequestResult(ok=False, code=type(exc).__name__)
    if not stamps:
        return RequestResult(ok=False, code="EMPTY")
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return RequestResult(ok=True, ttft=stamps[0] - started, total=stamps[-1] - started,
                         tokens=tokens if tokens is not None else len(stamps), gaps=gaps, route=route)


class _Sender:
    """Sends one request over the API the address names: gRPC (host:port) or OpenAI HTTP (http://...)."""

    def __init__(self, address: str, timeout_s: float):
        self.address, self.timeout_s = address, timeout_s
        self.http = address.startswith(("http://", "https://"))

    async def __aenter__(self):
        if self.http:
            self._client = httpx.AsyncClient(base_url=self.address, timeout=self.timeout_s,
                                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
            models = (await self._client.get("/v1/models")).json()["data"]
            self._model = models[0]["id"]
        else:
            self._channel = grpc.aio.insecure_channel(self.address)
            self._stub = inference_pb2_grpc.InferenceStub(self._channel)
        return self

    async def __aexit__(self, *exc):
        if self.http:
            await self._client.aclose()
        else:
            await self._channel.close()

    def send(self, prompt: str, output_tokens: int):
        if self.http:
            return _one_http(self._client, self._model, prompt, output_tokens, self.timeout_s)
        return _one(self._stub, prompt, output_tokens, self.timeout_s)


async def run_rate(address: str, workload: Workload, rate: float, duration_s: float, timeout_s: float = 300.0) -> RateResult:
    """Poisson arrivals at `rate` requests/s for `duration_s`, then wait for every request to end."""
    count = max(1, round(rate * duration_s))
    prompts = workload.prompts(count)
    rng = random.Random(workload.seed + int(rate * 1000))
    async with _Sender(address, timeout_s) as sender:
        started = time.perf_counter()
        tasks = []
        next_at = started
        for prompt in prompts:
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            tasks.append(asyncio.create_task(sender.send(prompt, workload.output_tokens)))
        results = await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    done = [r for r in results if r.ok]
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            errors[r.code] = errors.get(r.code, 0) + 1
    return RateResult(
        offered_rps=rate,
        sent=len(results),
        completed=len(done),
        errors=errors,
        wall_s=wall,
        achieved_rps=len(done) / wall,
        output_tok_s=sum(r.tokens for r in done) / wall,
        ttft_s=percentiles([r.ttft for r in done]),
        itl_s=percentiles([g for r in done for g in r.gaps]),
        e2e_s=percentiles([r.total for r in done]),
        disaggregated_share=sum(r.route == "disaggregated" for r in done) / max(1, len(done)),
    )


def judge(result: RateResult, slo_ttft_p90: float | None, slo_itl_p90: float | None) -> bool | None:
    """Whether a rate meets the SLO: every request completed and both p90s within bounds."""
    if slo_ttft_p90 is None and slo_itl_p90 is None:
        return None
    return (
        result.completed == result.sent
        and (slo_ttft_p90 is None or result.ttft_s["p90"] <= slo_ttft_p90)
        and (slo_itl_p90 is None or result.itl_s["p90"] <= slo_itl_p90)
    )


async def sweep(address: str, workload: Workload, rates: list[float], duration_s: float,
                slo_ttft_p90: float | None = None, slo_itl_p90: float | None = None, report=print) -> list[RateResult]:
    results = []
    report(HEADER)
    for rate in rates:
        result = await run_rate(address, workload, rate, duration_s)
        result.meets_slo = judge(result, slo_ttft_p90, slo_itl_p90)
        report(row(result))
        results.append(result)
    return results


HEADER = (f"{'offered':>8} {'done/sent':>9} {'req/s':>6} {'tok/s':>6} {'TTFT p50':>9} {'p90':>7} {'p99':>7} "
          f"{'ITL p50':>8} {'p90':>6} {'p99':>6} {'e2e p90':>8} {'disagg':>6} {'SLO':>4}  errors")


def row(r: RateResult) -> str:
    slo = {None: "-", True: "yes", False: "no"}[r.meets_slo]
    ms = lambda s: f"{1000 * s:.0f}ms" if s == s else "-"  # noqa: E731  (NaN when nothing completed)
    return (f"{r.offered_rps:>7.2f}/s {r.completed:>4}/{r.sent:<4} {r.achieved_rps:>6.2f} {r.output_tok_s:>6.1f} "
            f"{ms(r.ttft_s['p50']):>9} {ms(r.ttft_s['p90']):>7} {ms(r.ttft_s['p99']):>7} {ms(r.itl_s['p50']):>8} "
            f"{ms(r.itl_s['p90']):>6} {ms(r.itl_s['p99']):>6} {ms(r.e2e_s['p90']):>8} {100 * r.disaggregated_share:>5.0f}% "
            f"{slo:>4}  {r.errors or ''}")


def goodput(results: list[RateResult]) -> RateResult | None:
    """The highest offered rate that met the SLO (the configuration's point on the frontier)."""
    meeting = [r for r in results if r.meets_slo]
    return max(meeting, key=lambda r: r.offered_rps) if meeting else None


def save(path: str, results: list[RateResult], **context) -> None:
    with open(path, "w") as f:
        json.dump({**context, "results": [asdict(r) for r in results]}, f, indent=2)
