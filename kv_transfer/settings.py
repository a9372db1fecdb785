"""KV transfer settings: which connector moves the KV cache, over which buffer, with which ports.

One `KVTransferSettings` is shared by both pools (the YAML's `kv_transfer:` section). Each engine
replica turns it into a vLLM `KVTransferConfig` for its role with `vllm_config(role)`, after
claiming a side-channel port with `claim_side_channel_port()` so that replicas sharing a node
never collide.
"""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

KVRole = Literal["kv_producer", "kv_consumer"]


class KVTransferSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connector: Literal["NixlConnector"] = Field(
        "NixlConnector", description="vLLM KV connector that moves blocks from prefill to decode."
    )
    buffer_device: Literal["cpu", "cuda"] = Field(
        "cpu", description="Where the connector stages KV blocks: 'cpu' on CPU engines, 'cuda' for GPU-direct RDMA."
    )
    side_channel_host: str = Field(
        "127.0.0.1",
        description="Address each engine's NIXL handshake side channel binds to and advertises; "
        "'auto' takes the Ray node's address (multi-node clusters).",
    )
    side_channel_ports: tuple[int, int] | Literal["auto"] = Field(
        "auto",
        description="Port range [first, last] the replicas of a node claim side-channel ports from, "
        "or 'auto' for a free port chosen by the OS.",
    )
    failure_policy: Literal["recompute", "fail"] = Field(
        "recompute",
        description="What decode does when a KV pull fails: 'recompute' prefills locally, 'fail' ends the request with an error.",
    )
    lease_seconds: int = Field(
        30, ge=1, le=3600, description="How long prefill holds a request's blocks waiting for decode's pull."
    )
    recompute_threshold_tokens: int = Field(
        64, ge=0, description="Prompts shorter than this are recomputed on decode instead of pulled (vLLM's kv_recompute_threshold)."
    )
    ucx_net_devices: str | None = Field(
        "lo", description="UCX_NET_DEVICES for the engines ('lo' keeps traffic on loopback; null lets UCX choose)."
    )

    @model_validator(mode="after")
    def _check_ports(self) -> "KVTransferSettings":
        if self.side_channel_ports != "auto":
            first, last = self.side_channel_ports
            if not 1024 <= first <= last <= 65535:
                raise ValueError(f"side_channel_ports must satisfy 1024 <= first <= last <= 65535, got {first}..{last}")
        return self

    def vllm_config(self, role: KVRole, engine_id: str):
        """The vLLM KVTransferConfig for one engine in `role`."""
        from vllm.config import KVTransferConfig

        return KVTransferConfig(
            kv_connector=self.connector,
            kv_role=role,
            engine_id=engine_id,
            kv_buffer_device=self.buffer_device,
            kv_load_failure_policy=self.failure_policy,
            kv_connector_extra_config={
                "kv_lease_duration": self.lease_seconds,
                "kv_recompute_threshold": self.recompute_threshold_tokens,
            },
        )

    def resolved_host(self) -> str:
        if self.side_channel_host != "auto":
            return self.side_channel_host
        import ray

        return ray.util.get_node_ip_address()

    def claim_side_channel_port(self) -> int:
        """A side-channel port that no other process on this host is bound to right now."""
        host = self.resolved_host()
        if self.side_channel_ports == "auto":
            return _bind_probe(host, 0)
        first, last = self.side_channel_ports
        for port in range(first, last + 1):
            try:
                return _bind_probe(host, port)
            except OSError:
                continue
        raise RuntimeError(f"no free side-channel port in {first}..{last} on {host}")

    def engine_environment(self, side_channel_port: int) -> dict[str, str]:
        """Environment the engine process (and the EngineCore it spawns) must start with."""
        env = {
            "VLLM_NIXL_SIDE_CHANNEL_HOST": self.resolved_host(),
            "VLLM_NIXL_SIDE_CHANNEL_PORT": str(side_channel_port),
        }
        if self.ucx_net_devices:
            env["UCX_NET_DEVICES"] = self.ucx_net_devices
        return env


def _bind_probe(host: str, port: int) -> int:
    # vLLM binds the side channel itself a moment later; SO_REUSEADDR is not set here so that a port
    # held by a live engine is reported busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        return sock.getsockname()[1]
