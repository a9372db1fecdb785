"""Building the Serve application from a ClusterConfig: router (gRPC + HTTP) -> prefill pool, decode pool."""

from __future__ import annotations

from ray import serve
from ray.serve.config import AutoscalingConfig, RequestRouterConfig

from pdserve.config import ClusterConfig, PoolSpec
from prefill_service.deployment import PrefillServer
from decode_service.deployment import DecodeServer
from router.ingress import Router
from router.openai_api import openai_app
from router.replica_picking import PolicyRequestRouter

ROUTING_STATS_PERIOD_S = 1.0


def _pool_options(config: ClusterConfig, pool: PoolSpec, fallback_policy: str = "round_robin") -> dict:
    actor_options = {"num_cpus": pool.resources.num_cpus, "num_gpus": pool.resources.num_gpus}
    if pool.resources.accelerator_type:
        actor_options["accelerator_type"] = pool.resources.accelerator_type
    if config.env:
        actor_options["runtime_env"] = {"env_vars": dict(config.env)}
    options = {
        "ray_actor_options": actor_options,
        "max_ongoing_requests": pool.max_ongoing_requests,
        "health_check_period_s": 5,
        "health_check_timeout_s": 30,
        "graceful_shutdown_timeout_s": 10,
        "request_router_config": RequestRouterConfig(
            request_router_class=PolicyRequestRouter,
            request_router_kwargs={"policy": fallback_policy},
            request_routing_stats_period_s=ROUTING_STATS_PERIOD_S,
        ),
    }
    if pool.autoscaling:
        options["autoscaling_config"] = AutoscalingConfig(
            min_replicas=pool.autoscaling.min_replicas,
            max_replicas=pool.autoscaling.max_replicas,
            target_ongoing_requests=pool.autoscaling.target_ongoing_requests,
        )
    else:
        options["num_replicas"] = pool.replicas
    return options


def build_app(config: ClusterConfig):
    raw = config.model_dump(mode="json")
    prefill = serve.deployment(PrefillServer).options(
        **_pool_options(config, config.prefill)
    ).bind(raw)
    decode = serve.deployment(DecodeServer).options(
        **_pool_options(config, config.decode)
    ).bind(raw)
    # The router serves gRPC itself and the OpenAI HTTP API through Serve's HTTP proxy.
    router = serve.deployment(serve.ingress(openai_app)(Router)).options(
        num_replicas=config.router.replicas,
        ray_actor_options={"num_cpus": config.router.num_cpus},
        max_ongoing_requests=config.router.max_ongoing_requests,
    )
    return router.bind(raw, prefill, decode)
