"""Filters drop replicas that must not take the request. Each returns the replicas it keeps."""

from __future__ import annotations

from router.scheduling.types import ReplicaView, RequestView


class KVHeadroomFilter:
    """Drops replicas whose KV cache is nearly full: a new sequence there would preempt others."""

    name = "kv_headroom"

    def __init__(self, max_kv_usage: float = 0.95):
        self.max_kv_usage = max_kv_usage

    def keep(self, request: RequestView, replicas: list[ReplicaView]) -> list[ReplicaView]:
        return [r for r in replicas if r.kv_cache_usage < self.max_kv_usage]


class QueueDepthFilter:
    """Drops replicas with too many requests waiting for a batch slot."""

    name = "queue_depth"

    def __init__(self, max_waiting: int = 64):
        self.max_waiting = max_waiting

    def keep(self, request: RequestView, replicas: list[ReplicaView]) -> list[ReplicaView]:
        return [r for r in replicas if r.waiting + r.in_flight <= self.max_waiting]


FILTERS = {cls.name: cls for cls in (KVHeadroomFilter, QueueDepthFilter)}
