"""The bridge between our picking policies and Ray Serve's request routing.

Ray Serve sends each handle call to a replica chosen by the deployment's `RequestRouter`; this
subclass asks a `router.policies` policy for a ranking of the live replicas, so the replica set
(and its health) stays Serve's while the choice is ours. It is configured per deployment with
`RequestRouterConfig(request_router_class=PolicyRequestRouter, request_router_kwargs={"policy": ...})`.
"""

from __future__ import annotations

from typing import List, Optional

from ray.serve.request_router import FIFOMixin, PendingRequest, RequestRouter, RunningReplica

from router.policies import make_policy


class PolicyRequestRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, policy: str = "round_robin", **_ignored) -> None:
        self._policy = make_policy(policy)

    async def choose_replicas(
        self,
        candidate_replicas: List[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> List[List[RunningReplica]]:
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=lambda r: r.replica_id.unique_id)
        ranking = self._policy.rank([r.replica_id.unique_id for r in ordered])
        # Each rank holds one replica: Serve tries the policy's first choice, and falls back to the
        # next only if that replica's queue is full.
        return [[ordered[i]] for i in ranking]
