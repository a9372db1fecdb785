"""Scorers rate each replica in [0, 1] (1 is best); a profile weighs and adds them."""

from __future__ import annotations

from router.scheduling.types import ReplicaView, RequestView


class PrefixCacheScorer:
    """The share of the prompt's full blocks the replica already holds."""

    name = "prefix_cache"

    def score(self, request: RequestView, replicas: list[ReplicaView]) -> list[float]:
        total = request.total_blocks
        if total == 0:
            return [0.0] * len(replicas)
        return [r.matched_blocks / total for r in replicas]


class QueueScorer:
    """Fewer requests queued or running (including this router's own in flight) scores higher,
    relative to the busiest candidate."""

    name = "queue"

    def score(self, request: RequestView, replicas: list[ReplicaView]) -> list[float]:
        loads = [r.waiting + r.running + r.in_flight for r in replicas]
        busiest = max(loads, default=0)
        if busiest == 0:
            return [1.0] * len(replicas)
        return [1.0 - load / busiest for load in loads]


class KVHeadroomScorer:
    """Free KV cache: the decode pool's main constraint."""

    name = "kv_headroom"

    def score(self, request: RequestView, replicas: list[ReplicaView]) -> list[float]:
        return [1.0 - r.kv_cache_usage for r in replicas]


class CacheSpreadScorer:
    """Fewer cached blocks scores higher. Breaks the tie a new prefix meets on an idle pool toward
    the replica with the emptiest cache, so distinct prefixes spread over the pool's total cache
    instead of piling onto one replica (where they would evict each other)."""

    name = "cache_spread"

    def score(self, request: RequestView, replicas: list[ReplicaView]) -> list[float]:
        fullest = max((r.held_blocks for r in replicas), default=0)
        if fullest == 0:
            return [1.0] * len(replicas)
        return [1.0 - r.held_blocks / fullest for r in replicas]


SCORERS = {cls.name: cls for cls in (PrefixCacheScorer, QueueScorer, KVHeadroomScorer, CacheSpreadScorer)}
