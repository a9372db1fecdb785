"""The bridge between our scheduler and Ray Serve's request routing.

Ray Serve sends each handle call to a replica chosen by the deployment's `RequestRouter`. The
router's scheduler (router/scheduling) has already ranked the replicas, and passes that ranking
in the call's `session_id` (Serve's stickiness field) as `pin:<id>,<id>,...`; this class honours
it: the first live replica of the ranking is tried first, the others of the ranking next, then
any other live replica. Without a pin (or when none of the pinned replicas is alive) the
configured fallback picker (router/scheduling/pickers.py) orders the live replicas. The replica set (and its health) stays Serve's.
"""

from __future__ import annotations

from typing import List, Optional

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from router.scheduling.pickers import PICKERS

PIN_PREFIX = "pin:"


def pin(ranking: list[str], keep: int = 4) -> str:
    """The session id that pins a call to `ranking` (best first)."""
    return PIN_PREFIX + ",".join(ranking[:keep])


def pinned_ranking(session_id: str | None) -> list[str]:
    if not session_id or not session_id.startswith(PIN_PREFIX):
        return []
    return [r for r in session_id[len(PIN_PREFIX) :].split(",") if r]


class PolicyRequestRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, policy: str = "round_robin", **_ignored) -> None:
        if policy not in PICKERS:
            raise ValueError(f"unknown policy {policy!r}; known: {sorted(PICKERS)}")
        self._fallback = PICKERS[policy]()

    async def choose_replicas(
        self,
        candidate_replicas: List[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        wanted = pinned_ranking(pending_request.metadata.session_id if pending_request else None)
        ranked = [by_id[r] for r in wanted if r in by_id]
        rest = sorted((r for r in candidate_replicas if r.replica_id.unique_id not in set(wanted)), key=lambda r: r.replica_id.unique_id)
        if not ranked:
            order = self._fallback.order([r.replica_id.unique_id for r in rest], {})
            ranked, rest = [by_id[r] for r in order], []
        # One replica per rank: Serve tries them in order, moving on only when one's queue is full.
        return [[r] for r in ranked + rest]
