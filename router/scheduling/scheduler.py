"""One scheduling decision: decode pick, then the decider, then (maybe) the prefill pick."""

from __future__ import annotations

from router.scheduling.decider import DisaggregationDecider
from router.scheduling.profile import SchedulingProfile
from router.scheduling.types import Decision, ReplicaView, RequestView

DISAGGREGATED, COLOCATED = "disaggregated", "colocated"


class NoReplicas(Exception):
    """No replica of a pool survived the filters (or none is alive)."""


class Scheduler:
    def __init__(self, prefill: SchedulingProfile, decode: SchedulingProfile, decider: DisaggregationDecider):
        self.prefill, self.decode, self.decider = prefill, decode, decider

    def schedule(self, request: RequestView, prefill: list[ReplicaView], decode: list[ReplicaView]) -> Decision:
        decode_result = self.decode.rank(request, decode)
        if not decode_result.ranking:
            raise NoReplicas(f"no decode replica can take the request ({_why(decode, decode_result)})")
        chosen = next(r for r in decode if r.replica == decode_result.ranking[0])
        disaggregate, reason = self.decider.disaggregate(
            request.prompt_tokens, chosen.matched_blocks * request.block_size, request.max_tokens
        )
        if not disaggregate or not prefill:
            return Decision(COLOCATED, decode_result.ranking, [], chosen.matched_blocks, 0, reason if disaggregate is False else "no prefill replica alive")
        prefill_result = self.prefill.rank(request, prefill)
        if not prefill_result.ranking:
            # Every prefill replica is saturated: decode prefilling locally beats queueing.
            return Decision(COLOCATED, decode_result.ranking, [], chosen.matched_blocks, 0, "prefill pool saturated")
        best = next(r for r in prefill if r.replica == prefill_result.ranking[0])
        return Decision(DISAGGREGATED, decode_result.ranking, prefill_result.ranking, chosen.matched_blocks, best.matched_blocks, reason)


def _why(replicas: list[ReplicaView], result) -> str:
    if not replicas:
        return "none alive"
    return ", ".join(f"{r}: {f}" for r, f in sorted(result.filtered_out.items()))
