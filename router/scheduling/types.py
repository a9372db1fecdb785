"""The plain records the scheduler reads and returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ReplicaView:
    """One candidate replica as the scheduler sees it."""

    replica: str
    waiting: int = 0
    running: int = 0
    kv_cache_usage: float = 0.0
    in_flight: int = 0  # requests this router sent that the last load report may not show yet
    matched_blocks: int = 0  # leading prompt blocks this replica holds in its prefix cache
    held_blocks: int = 0  # blocks the replica holds in its prefix cache, all prompts together


@dataclass(slots=True)
class RequestView:
    prompt_tokens: int
    block_hashes: list[int]
    block_size: int
    max_tokens: int = 0  # the output budget asked for; 0 when not known

    @property
    def total_blocks(self) -> int:
        return len(self.block_hashes)


@dataclass(slots=True)
class ProfileResult:
    ranking: list[str]  # replica ids, best first
    scores: dict[str, float] = field(default_factory=dict)  # weighted total per surviving replica
    filtered_out: dict[str, str] = field(default_factory=dict)  # replica -> filter that dropped it


@dataclass(slots=True)
class Decision:
    route: str  # "disaggregated" or "colocated"
    decode: list[str]  # ranking, best first
    prefill: list[str]  # ranking, empty when colocated
    decode_matched_blocks: int = 0
    prefill_matched_blocks: int = 0
    reason: str = ""
