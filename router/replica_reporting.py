"""What an engine replica reports to the routers: its KV cache events and its live load.

Started once per engine replica, in the replica's event loop:
    reporting = ReplicaReporting(config, pool, replica_id, events_endpoint, figures)
    await reporting.start()      index entries rebuilt from the engine's events; load every 250 ms;
                                 Prometheus metrics of the engine every second (pdserve/metrics.py)
    await reporting.stop()       withdraws the replica from the load view and the index
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

import logging

from pdserve.config import ClusterConfig
from router.kv_events import KVEventIndexer
from router.load_view import LoadReporter
from router.prefix_index import PrefixIndex

logger = logging.getLogger("pdserve.reporting")


class ReplicaReporting:
    def __init__(self, config: ClusterConfig, pool: str, replica: str, events_endpoint: str, figures: Callable[[], dict]):
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(config.redis.url)
        self.index = PrefixIndex(self.redis, config.redis.namespace, pool)
        self.indexer = KVEventIndexer(self.index, replica, events_endpoint, topic="kv")
        self.reporter = LoadReporter(self.redis, config.redis.namespace, pool, replica, figures)
        self.replica = replica
        self.figures = figures
        self.pool = pool
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await self.index.clear_replica(self.replica)
        await self.reporter.report_once()
        self._tasks = [loop.create_task(self.indexer.run()), loop.create_task(self.reporter.run()),
                       loop.create_task(self._export_metrics())]

    async def _export_metrics(self, period_s: float = 1.0) -> None:
        from pdserve.metrics import EngineMetrics

        metrics = EngineMetrics(self.pool)
        while True:
            try:
                metrics.update(self.figures())
            except Exception as exc:  # a metrics hiccup must never stop the replica
                logger.warning("engine metrics export failed: %s", exc)
            await asyncio.sleep(period_s)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await self.reporter.withdraw()
            await self.index.clear_replica(self.replica)
        finally:
            await self.redis.aclose()
            if self.indexer.endpoint.startswith("ipc://"):
                Path(self.indexer.endpoint[len("ipc://") :]).unlink(missing_ok=True)
