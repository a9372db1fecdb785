"""Every Prometheus metric pdserve exports, in one place.

They are made with Ray Serve's metrics API (`ray.serve.metrics`), which tags each with the
deployment, replica and application it comes from, and Ray exports them on each node's Prometheus
endpoint (`observability.metrics_export_port`, 127.0.0.1:8080 on the embedded default) with Ray's
`ray_` prefix: `pdserve_ttft_seconds` is scraped as `ray_pdserve_ttft_seconds_bucket` etc.

Router replicas (`RouterMetrics`), per request:
    pdserve_requests_total{route, outcome}        outcome: ok, invalid, overloaded, unavailable, deadline, cancelled
    pdserve_ttft_seconds{route}                   arrival at the router -> first token sent
    pdserve_inter_token_seconds{route}            gap between consecutive tokens sent
    pdserve_queue_seconds{priority}               admission: tenant checks and the priority queue
    pdserve_request_seconds{route}                arrival -> last token
    pdserve_prompt_tokens_total{route}, pdserve_completion_tokens_total{route}
    pdserve_prompt_tokens_cached_total{route}     prompt tokens decode did not compute (pulled over NIXL or cached)
    pdserve_recoveries_total{cause}               prefill retries and fallbacks, decode resumes (router/request_path.py)
    pdserve_admission_redis_bypasses_total        requests admitted without tenant checks: Redis did not answer
Engine replicas (`EngineMetrics`), from vLLM's per-step stats (pdserve/engine.py):
    pdserve_engine_running, pdserve_engine_waiting, pdserve_engine_kv_cache_usage{pool}       gauges
    pdserve_engine_prefix_cache_queries_total, ..._hits_total{pool}    hit rate = rate(hits) / rate(queries)
    pdserve_engine_prompt_tokens_total{pool, source}                    source: computed, local_cache, kv_transfer
    pdserve_kv_transfers_total, pdserve_kv_transfer_bytes_total, pdserve_kv_transfer_seconds_total,
    pdserve_kv_transfer_failures_total, pdserve_kv_expired_requests_total{pool}   (NIXL, on the pulling side)
"""

from __future__ import annotations

TTFT_BUCKETS = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
ITL_BUCKETS = [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5, 10.0]
REQUEST_BUCKETS = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]


class RouterMetrics:
    def __init__(self):
        from ray.serve.metrics import Counter, Histogram

        self.requests = Counter("pdserve_requests_total", "Requests by route and outcome.", tag_keys=("route", "outcome"))
        self.ttft = Histogram("pdserve_ttft_seconds", "Time to first token, at the router.", TTFT_BUCKETS, tag_keys=("route",))
        self.itl = Histogram("pdserve_inter_token_seconds", "Time between tokens sent.", ITL_BUCKETS, tag_keys=("route",))
        self.queue = Histogram("pdserve_queue_seconds", "Admission wait.", TTFT_BUCKETS, tag_keys=("priority",))
        self.latency = Histogram("pdserve_request_seconds", "Arrival to last token.", REQUEST_BUCKETS, tag_keys=("route",))
        self.prompt_tokens = Counter("pdserve_prompt_tokens_total", "Prompt tokens served.", tag_keys=("route",))
        self.cached_tokens = Counter("pdserve_prompt_tokens_cached_total", "Prompt tokens decode did not compute.", tag_keys=("route",))
        self.completion_tokens = Counter("pdserve_completion_tokens_total", "Tokens generated.", tag_keys=("route",))
        self.recoveries = Counter("pdserve_recoveries_total", "Accepted requests recovered, by cause.", tag_keys=("cause",))
        self.redis_bypasses = Counter("pdserve_admission_redis_bypasses_total", "Admitted without tenant checks (Redis down).")


class RequestClock:
    """One request's timings at the router, recorded into RouterMetrics as it streams."""

    def __init__(self, metrics: RouterMetrics | None, now: float):
        self.metrics, self.started, self.last_token_at = metrics, now, None
        self.route = "unknown"

    def admitted(self, now: float, priority: str) -> None:
        if self.metrics:
            self.metrics.queue.observe(now - self.started, tags={"priority": priority})

    def tokens(self, now: float, count: int, route: str = "") -> None:
        self.route = route or self.route
        if not self.metrics or count == 0:
            return
        tags = {"route": self.route}
        if self.last_token_at is None:
            self.metrics.ttft.observe(now - self.started, tags=tags)
        else:
            gap = (now - self.last_token_at) / count  # several tokens in one message share the gap
            for _ in range(count):
                self.metrics.itl.observe(gap, tags=tags)
        self.last_token_at = now

    def finished(self, now: float, outcome: str, usage=None) -> None:
        if not self.metrics:
            return
        tags = {"route": self.route}
        self.metrics.requests.inc(tags={"route": self.route, "outcome": outcome})
        if outcome == "ok":
            self.metrics.latency.observe(now - self.started, tags=tags)
        if usage is not None:
            for counter, value in ((self.metrics.prompt_tokens, usage.prompt_tokens),
                                   (self.metrics.cached_tokens, usage.cached_prompt_tokens),
                                   (self.metrics.completion_tokens, usage.completion_tokens)):
                if value:
                    counter.inc(value, tags=tags)


_ENGINE_GAUGES = {"running": "pdserve_engine_running", "waiting": "pdserve_engine_waiting",
                  "kv_cache_usage": "pdserve_engine_kv_cache_usage"}
_ENGINE_COUNTERS = {
    "prefix_cache_queries": ("pdserve_engine_prefix_cache_queries_total", {}),
    "prefix_cache_hits": ("pdserve_engine_prefix_cache_hits_total", {}),
    "prompt_tokens_computed": ("pdserve_engine_prompt_tokens_total", {"source": "computed"}),
    "prompt_tokens_local_cache_hit": ("pdserve_engine_prompt_tokens_total", {"source": "local_cache"}),
    "prompt_tokens_kv_transfer": ("pdserve_engine_prompt_tokens_total", {"source": "kv_transfer"}),
    "transfers": ("pdserve_kv_transfers_total", {}),
    "transfer_bytes": ("pdserve_kv_transfer_bytes_total", {}),
    "transfer_seconds": ("pdserve_kv_transfer_seconds_total", {}),
    "transfer_failures": ("pdserve_kv_transfer_failures_total", {}),
    "kv_expired_requests": ("pdserve_kv_expired_requests_total", {}),
}


class EngineMetrics:
    """One engine replica's figures (cumulative counts from pdserve.engine.EngineFigures) as metrics;
    `update(figures)` is called periodically and turns counts into counter increments."""

    def __init__(self, pool: str):
        from ray.serve.metrics import Counter, Gauge

        self.pool = pool
        self._gauges = {k: Gauge(name, f"Engine {k}.", tag_keys=("pool",)) for k, name in _ENGINE_GAUGES.items()}
        counters: dict[str, Counter] = {}
        self._counters = {}
        for key, (name, tags) in _ENGINE_COUNTERS.items():
            if name not in counters:
                counters[name] = Counter(name, f"Engine {name[8:]}.", tag_keys=("pool", *tags))
            self._counters[key] = (counters[name], {"pool": pool, **tags})
        self._last: dict[str, float] = {}

    def update(self, figures: dict) -> None:
        for key, gauge in self._gauges.items():
            if key in figures:
                gauge.set(float(figures[key]), tags={"pool": self.pool})
        for key, (counter, tags) in self._counters.items():
            value = float(figures.get(key, 0))
            delta = value - self._last.get(key, 0.0)
            if delta > 0:
                counter.inc(delta, tags=tags)
            self._last[key] = value
