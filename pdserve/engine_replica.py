"""What every engine replica (prefill and decode) does besides serving its requests.

    await self.start_replica(config)      parse the config, set up tracing, start the vLLM engine in
                                          the pool's KV role, start reporting (KV events -> prefix
                                          index, load -> Redis, metrics -> Prometheus)
    figures()                             live load, cache and transfer figures (operators, tests)
    record_routing_stats()                Ray Serve polls it; the request router reads it
    check_health()                        Ray Serve's health check: the engine answers
    holds_no_kv_blocks()                  drain / leak probe (clears the prefix cache)
"""

from __future__ import annotations

import logging
import os
import uuid

from pdserve import tracing
from pdserve.config import ClusterConfig
from pdserve.engine import start_engine

logger = logging.getLogger("pdserve.replica")

KV_ROLE = {"prefill": "kv_producer", "decode": "kv_consumer"}


class EngineReplica:
    pool: str = ""  # "prefill" or "decode", set by the subclass

    async def start_replica(self, config: dict) -> None:
        from router.replica_reporting import ReplicaReporting

        self.config = ClusterConfig.model_validate(config)
        tracing.setup_tracing(self.config, f"pdserve-{self.pool}")
        self.replica_id = replica_name(self.pool)
        self.engine = start_engine(self.config, getattr(self.config, self.pool), KV_ROLE[self.pool], self.replica_id)
        self.reporting = ReplicaReporting(self.config, self.pool, self.replica_id, self.engine.events_endpoint, self.engine.live_figures)
        await self.reporting.start()
        logger.info("%s engine %s ready, side channel port %d", self.pool, self.engine.engine_id, self.engine.side_channel_port)

    def figures(self) -> dict:
        return {"replica": self.replica_id, "pid": os.getpid(), **self.engine.live_figures()}

    def record_routing_stats(self) -> dict:
        """Ray Serve polls this; the request router reads it as `replica.routing_stats`."""
        return self.engine.figures.snapshot()

    async def check_health(self) -> None:
        await self.engine.check_health()

    async def holds_no_kv_blocks(self) -> bool:
        return await self.engine.holds_no_kv_blocks()

    async def __del__(self):
        reporting = getattr(self, "reporting", None)
        if reporting is not None:
            await reporting.stop()
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def replica_name(pool: str) -> str:
    from ray import serve

    try:
        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (direct construction in a test)
        return f"{pool}-{uuid.uuid4().hex[:8]}"
