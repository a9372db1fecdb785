"""Building one vLLM AsyncLLM for a pool, and reading its live figures.

Both services call `start_engine(config, pool, role)`; the role is the only difference between a
prefill and a decode engine. The environment vLLM reads at start (KV cache size, thread binding,
NIXL side channel) is set here, once, at the process edge, before the engine spawns its core.
"""

from __future__ import annotations

import os
import threading
import uuid
from dataclasses import dataclass, field, fields

from kv_transfer.settings import KVRole
from pdserve.config import ClusterConfig, PoolSpec


@dataclass(slots=True)
class EngineFigures:
    """Latest per-engine figures, written by vLLM's stats hook on every engine step."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    transfers: int = 0
    transfer_bytes: int = 0
    transfer_seconds: float = 0.0
    transfer_failures: int = 0
    kv_expired_requests: int = 0
    prompt_tokens_computed: int = 0
    prompt_tokens_local_cache_hit: int = 0
    prompt_tokens_kv_transfer: int = 0  # prompt tokens whose KV arrived from another engine
    steps: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {name: getattr(self, name) for name in _FIGURE_NAMES}


_FIGURE_NAMES = tuple(f.name for f in fields(EngineFigures) if not f.name.startswith("_"))


def _figures_logger_factory(figures: EngineFigures):
    """A vLLM StatLoggerBase that copies each step's stats into `figures`.

    The process-wide Prometheus registry of vLLM labels every engine "0" and keeps only the last
    one built, so per-engine figures come from this in-process hook instead.
    """
    from vllm.v1.metrics.loggers import StatLoggerBase

    class FiguresLogger(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            self.figures = figures

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0):
            f = self.figures
            if iteration_stats is not None:
                tokens = iteration_stats.prompt_token_stats
                with f._lock:
                    f.prompt_tokens_computed += tokens.computed
                    f.prompt_tokens_local_cache_hit += tokens.local_cache_hit
                    f.prompt_tokens_kv_transfer += tokens.external_kv_transfer
            if scheduler_stats is None:
                return
            with f._lock:
                f.steps += 1
                f.running = scheduler_stats.num_running_reqs
                f.waiting = scheduler_stats.num_waiting_reqs
                f.kv_cache_usage = scheduler_stats.kv_cache_usage
                f.prefix_cache_queries += scheduler_stats.prefix_cache_stats.queries
                f.prefix_cache_hits += scheduler_stats.prefix_cache_stats.hits
                _add_connector_stats(f, scheduler_stats.kv_connector_stats)

        def log_engine_initialized(self):
            pass

    return FiguresLogger


def _add_connector_stats(f: EngineFigures, stats: dict | None) -> None:
    """Fold NixlConnector's per-step transfer telemetry (lists of per-transfer samples) into totals."""
    if not stats:
        return
    data = stats.get("data", stats) if isinstance(stats, dict) else {}
    if "NixlConnector" in data:  # MultiConnector-style nesting
        data = data["NixlConnector"].get("data", data["NixlConnector"])
    durations = data.get("transfer_duration") or []
    f.transfers += len(durations)
    f.transfer_seconds += float(sum(durations))
    f.transfer_bytes += int(sum(data.get("bytes_transferred") or []))
    for key in ("num_failed_transfers", "num_failed_handshakes", "num_failed_notifications"):
        f.transfer_failures += len(data.get(key) or [])
    f.kv_expired_requests += len(data.get("num_kv_expired_reqs") or [])


@dataclass(slots=True)
class RunningEngine:
    engine: object  # vllm.v1.engine.async_llm.AsyncLLM
    engine_id: str
    side_channel_port: int
    figures: EngineFigures
    events_endpoint: str | None

    def shutdown(self) -> None:
        self.engine.shutdown()

    def live_figures(self) -> dict:
        return {
            "engine_id": self.engine_id,
            "unfinished_requests": self.engine.get_num_unfinished_requests(),
            **self.figures.snapshot(),
        }

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def holds_no_kv_blocks(self) -> bool:
        """True when no request holds a KV block (vLLM refuses to reset its prefix cache otherwise).

        Clears the prefix cache as a side effect: a drain or leak check, not a hot-path call.
        """
        return bool(await self.engine.reset_prefix_cache())


def engine_environment(config: ClusterConfig, pool: PoolSpec, side_channel_port: int, local_rank: int = 0) -> dict[str, str]:
    env = dict(config.env)
    env.update(config.kv_transfer.engine_environment(side_channel_port))
    if pool.engine.device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(pool.engine.kv_cache_gib)
        bind = pool.engine.cpu_threads_bind
        if isinstance(bind, list):
            bind = bind[local_rank % len(bind)] if bind else None
        if bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return env


def _local_rank() -> int:
    """This replica's rank among its deployment's replicas on this node (0 outside Serve)."""
    try:
        from ray import serve

        return serve.get_replica_context().rank.local_rank
    except Exception:
        return 0


def build_engine_args(config: ClusterConfig, pool: PoolSpec, role: KVRole, engine_id: str, events_endpoint: str | None = None):
    from vllm.engine.arg_utils import AsyncEngineArgs

    spec = pool.engine
    kwargs = dict(
        model=config.model.resolved_path(),
        served_model_name=config.model.served_name,
        dtype=config.model.dtype,
        max_model_len=config.model.max_model_len,
        max_num_seqs=spec.max_num_seqs,
        enforce_eager=spec.enforce_eager,
        enable_prefix_caching=spec.enable_prefix_caching,
        tensor_parallel_size=spec.tensor_parallel_size,
        kv_transfer_config=config.kv_transfer.vllm_config(role, engine_id),
        disable_log_stats=False,
    )
    if spec.max_num_batched_tokens:
        kwargs["max_num_batched_tokens"] = spec.max_num_batched_tokens
    kwargs["block_size"] = config.block_size  # the router hashes prompts with the same block size
    if events_endpoint:
        from router.kv_events import kv_events_config

        kwargs["kv_events_config"] = kv_events_config(events_endpoint, topic="kv")
    if spec.device == "cuda":
        kwargs["gpu_memory_utilization"] = spec.gpu_memory_utilization
    kwargs.update(spec.extra_args)
    return AsyncEngineArgs(**kwargs)


def start_engine(config: ClusterConfig, pool: PoolSpec, role: KVRole, name: str, publish_kv_events: bool = True) -> RunningEngine:
    """Start one engine in this process for `role`; call once per replica.

    With `publish_kv_events`, the engine publishes its KV cache events on a local ZMQ endpoint
    (`RunningEngine.events_endpoint`) for the replica's prefix-index reporter."""
    from router.kv_events import local_events_endpoint

    rank = _local_rank()
    slot = (0 if role == "kv_producer" else 100) + rank * pool.engine.tensor_parallel_size
    port = config.kv_transfer.claim_side_channel_port(slot)
    events_endpoint = local_events_endpoint() if publish_kv_events else None
    os.environ.update(engine_environment(config, pool, port, rank))
    from vllm.v1.engine.async_llm import AsyncLLM

    engine_id = f"{name}-{uuid.uuid4().hex[:8]}"
    figures = EngineFigures()
    engine = AsyncLLM.from_engine_args(
        build_engine_args(config, pool, role, engine_id, events_endpoint),
        stat_loggers=[_figures_logger_factory(figures)],
    )
    return RunningEngine(engine=engine, engine_id=engine_id, side_channel_port=port, figures=figures, events_endpoint=events_endpoint)


def sampling_params(spec, *, max_tokens: int | None = None, kv_transfer_params: dict | None = None, delta: bool = False):
    """vLLM SamplingParams for a `pdserve.v1.SamplingSpec`, optionally clamped and carrying connector params."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    return SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else spec.max_tokens,
        temperature=spec.temperature,
        top_p=spec.top_p,
        seed=spec.seed if spec.HasField("seed") else None,
        stop=list(spec.stop) or None,
        output_kind=RequestOutputKind.DELTA if delta else RequestOutputKind.FINAL_ONLY,
        extra_args={"kv_transfer_params": kv_transfer_params} if kv_transfer_params is not None else None,
    )
