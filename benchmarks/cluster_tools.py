"""Helpers the benchmarks share: resetting a running cluster to a cold, comparable state."""

from __future__ import annotations

import time

POOLS = {"prefill": "PrefillServer", "decode": "DecodeServer"}


def reset_prefix_caches(app_name: str) -> None:
    """Empty every engine's prefix cache (one pinned call per replica); fails if a block is held."""
    from ray import serve

    from router.replica_picking import pin

    router = serve.get_deployment_handle("Router", app_name=app_name)
    figures = router.pool_figures.remote().result(timeout_s=30)
    for pool, name in POOLS.items():
        handle = serve.get_deployment_handle(name, app_name=app_name)
        for replica in figures[pool]:
            assert handle.options(session_id=pin([replica])).holds_no_kv_blocks.remote().result(timeout_s=30), replica
    time.sleep(1.0)  # the emptied caches reach the routers' prefix index
