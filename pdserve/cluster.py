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
                loopback = self.config.ray.node_ip in ("127.0.0.1", "localhost")
                if loopback:
                    _keep_ray_on_loopback()
                # The setup hook keeps Serve's per-replica gRPC server on loopback too.
                ray.init(
                    runtime_env={"worker_process_setup_hook": "pdserve.cluster.keep_serve_replica_servers_on_loopback"}
                    if loopback else None,
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


def _keep_ray_on_loopback() -> None:
    """Make an in-process, single-node Ray bind and advertise 127.0.0.1, daemons included.

    Ray 2.60 turns `_node_ip_address="127.0.0.1"` into the machine's eth0 address
    (ray._private.services.resolve_ip_for_localhost) unless multi-node clustering is off, which is
    what RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 says (it is read once, at import, hence the constant
    too). With it, GCS, raylet, the agents and the metrics endpoint all listen on loopback. The
    environment variable reaches every process Ray starts."""
    import ray._private.ray_constants as ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


def keep_serve_replica_servers_on_loopback() -> None:
    """Ray worker setup hook (in-process Ray on loopback only): every Ray Serve 2.60 replica starts
    an inter-deployment gRPC server on the hard-coded address "[::]:0"
    (ray/serve/_private/replica.py, `_on_initialized`); bind it to 127.0.0.1 instead. The patch is
    confined to that one call site and changes nothing else."""
    from ray.serve._private import replica

    if getattr(replica.add_port_to_grpc_server, "_pdserve_loopback", False):
        return
    original = replica.add_port_to_grpc_server

    def add_port_on_loopback(server, address: str):
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address.rsplit(":", 1)[1]
        return original(server, address)

    add_port_on_loopback._pdserve_loopback = True
    replica.add_port_to_grpc_server = add_port_on_loopback
