"""Starting and stopping the cluster this process owns: Ray (in-process or joined) and the Serve app.

`LocalCluster` only ever stops what it started: an in-process Ray is shut down with the driver,
a joined cluster is left running with only this application deleted.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from pdserve.config import ClusterConfig

logger = logging.getLogger("pdserve.cluster")


@dataclass
class LocalCluster:
    config: ClusterConfig
    grpc_address: str = ""
    http_address: str = ""
    metrics_address: str = ""
    started_ray: bool = False
    redis_server: object = None

    def start(self) -> "LocalCluster":
        import ray
        from ray import serve

        from pdserve.app import build_app

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.config.model.source.startswith("embedded:"):
            from pdserve.embedded_model import ensure_model

            ensure_model()
        if self.config.redis.url == "embedded":
            from pdserve.redis_server import RedisServer

            self.redis_server = RedisServer().start()  # loopback only
            self.config = self.config.model_copy(
                update={"redis": self.config.redis.model_copy(update={"url": self.redis_server.url})}
            )
        tracing = self.config.observability.tracing
        if tracing.exporter == "file" and not os.path.isabs(tracing.file_path):
            # Replicas run in Ray's working folders: give them this process's idea of the path.
            absolute = tracing.model_copy(update={"file_path": os.path.abspath(tracing.file_path)})
            observability = self.config.observability.model_copy(update={"tracing": absolute})
            self.config = self.config.model_copy(update={"observability": observability})
        if not ray.is_initialized():
            if self.config.ray.address:
                ray.init(address=self.config.ray.address, logging_level=logging.WARNING)
            else:
                ray.init(
                    _node_ip_address=self.config.ray.node_ip,
                    num_cpus=self.config.ray.num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=self.config.ray.log_to_driver,
                    # Ray's per-node Prometheus endpoint, where every replica's pdserve_* metrics appear
                    # (bound to the node address, 127.0.0.1 here).
                    _metrics_export_port=self.config.observability.metrics_export_port,
                )
                self.started_ray = True
        serve.start(http_options={"host": self.config.router.host, "port": self.config.router.http_port})
        started = time.monotonic()
        handle = serve.run(build_app(self.config), name=self.config.name, route_prefix="/")
        self.grpc_address = handle.ready.remote().result(timeout_s=60)
        self.http_address = f"http://{self.config.router.host}:{self.config.router.http_port}"
        if self.started_ray and self.config.observability.metrics_export_port:
            self.metrics_address = f"http://{self.config.ray.node_ip}:{self.config.observability.metrics_export_port}/metrics"
        logger.info("cluster %s serving gRPC on %s and HTTP on %s after %.0f s", self.config.name, self.grpc_address,
                    self.http_address, time.monotonic() - started)
        return self

    def stop(self) -> None:
        import ray
        from ray import serve

        try:
            if ray.is_initialized():
                try:
                    serve.delete(self.config.name)
                    if self.started_ray:
                        serve.shutdown()
                finally:
                    if self.started_ray:
                        ray.shutdown()
        finally:
            if self.redis_server is not None:
                self.redis_server.stop()

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
