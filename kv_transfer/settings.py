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
        (20000, 20999),
        description="Port range [first, last] the replicas of a node claim side-channel ports from (keep it outside "
        "the OS's ephemeral range, which outgoing connections use), or 'auto' for an OS-chosen ephemeral port.",
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
    progress_delay_us: int | None = Field(
        200,
        ge=0,
        description="Pause of NIXL's progress thread between polls, in microseconds (kv_transfer/nixl_progress.py); "
        "null keeps NIXL's busy polling, which GPU hosts with spare cores may prefer.",
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

    def claim_side_channel_port(self, slot: int = 0) -> int:
        """A side-channel port that no other process on this host is bound to right now.

        vLLM binds the port a moment later and, if that bind fails, waits forever for its handshake
        listener; so each replica starts probing at its own `slot` (pool and rank on the node) and
        the range should lie outside the ephemeral ports that outgoing connections take."""
        host = self.resolved_host()
        if self.side_channel_ports == "auto":
            return _bind_probe(host, 0)
        first, last = self.side_channel_ports
        size = last - first + 1
        for step in range(size):
            port = first + (slot + step) % size
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
        if self.progress_delay_us is not None:
            from kv_transfer.nixl_progress import ENV

            env[ENV] = str(self.progress_delay_us)
        return env


def _bind_probe(host: str, port: int) -> int:
    # vLLM binds the side channel itself a moment later; SO_REUSEADDR is not set here so that a port
    # held by a live engine is reported busy.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, port))
        return sock.getsockname()[1]
