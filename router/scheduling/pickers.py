"""Pickers order the surviving replicas. Ties break on replica id, so every router agrees."""

from __future__ import annotations

import itertools
import random


class MaxScorePicker:
    name = "max_score"

    def order(self, replicas: list[str], scores: dict[str, float]) -> list[str]:
        # Same inputs give the same floats on every router, so plain comparison agrees across them.
        return sorted(replicas, key=lambda r: (-scores.get(r, 0.0), r))


class RoundRobinPicker:
    """The baseline: ignores scores, rotates the first choice."""

    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def order(self, replicas: list[str], scores: dict[str, float]) -> list[str]:
        ordered = sorted(replicas)
        if not ordered:
            return []
        first = next(self._turn) % len(ordered)
        return ordered[first:] + ordered[:first]


class RandomPicker:
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def order(self, replicas: list[str], scores: dict[str, float]) -> list[str]:
        ordered = sorted(replicas)
        self._rng.shuffle(ordered)
        return ordered


PICKERS = {cls.name: cls for cls in (MaxScorePicker, RoundRobinPicker, RandomPicker)}
