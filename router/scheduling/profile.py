"""A scheduling profile: filters, weighted scorers and a picker, built from the YAML config.

The framework, not the plugins, clamps scores to [0, 1], applies weights, and keeps the per-plugin
timing (`timings_s`) that a slow scorer would show up in.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field

from router.scheduling.filters import FILTERS
from router.scheduling.pickers import PICKERS
from router.scheduling.scorers import SCORERS
from router.scheduling.types import ProfileResult, ReplicaView, RequestView


@dataclass
class SchedulingProfile:
    name: str
    filters: list = field(default_factory=list)
    scorers: list[tuple[object, float]] = field(default_factory=list)  # (scorer, weight)
    picker: object = None
    timings_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @classmethod
    def from_spec(cls, name: str, spec) -> "SchedulingProfile":
        """`spec` is a `pdserve.config.ProfileSpec`: filter args, scorer weights, picker name."""
        return cls(
            name=name,
            filters=[FILTERS[f](**args) for f, args in spec.filters.items()],
            scorers=[(SCORERS[s](), w) for s, w in spec.scorers.items() if w > 0],
            picker=PICKERS[spec.picker](),
        )

    def rank(self, request: RequestView, replicas: list[ReplicaView]) -> ProfileResult:
        result = ProfileResult(ranking=[])
        kept = replicas
        for f in self.filters:
            started = time.perf_counter()
            survivors = f.keep(request, kept)
            self.timings_s[f.name] += time.perf_counter() - started
            ids = {r.replica for r in survivors}
            result.filtered_out.update({r.replica: f.name for r in kept if r.replica not in ids})
            kept = survivors
        totals = [0.0] * len(kept)
        for scorer, weight in self.scorers:
            started = time.perf_counter()
            values = scorer.score(request, kept)
            self.timings_s[scorer.name] += time.perf_counter() - started
            for i, v in enumerate(values):  # the hot loop of a decision: kept branch-only
                totals[i] += weight * (0.0 if v < 0.0 else 1.0 if v > 1.0 else v)
        result.scores = {r.replica: t for r, t in zip(kept, totals)}
        result.ranking = self.picker.order(list(result.scores), result.scores)
        return result
