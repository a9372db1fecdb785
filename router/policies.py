"""Replica-picking policies: given the live replicas (ids, sorted), say which to try first.

A policy returns a ranking (indices into the list, best first); the caller tries them in order.
Decisions are plain data, so policies are tested without Ray.
"""

from __future__ import annotations

import itertools
import random
from typing import Protocol, Sequence


class PickPolicy(Protocol):
    name: str

    def rank(self, replica_ids: Sequence[str]) -> list[int]: ...


class RoundRobin:
    name = "round_robin"

    def __init__(self) -> None:
        self._turn = itertools.count()

    def rank(self, replica_ids: Sequence[str]) -> list[int]:
        if not replica_ids:
            return []
        first = next(self._turn) % len(replica_ids)
        return [(first + i) % len(replica_ids) for i in range(len(replica_ids))]


class Random:
    name = "random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def rank(self, replica_ids: Sequence[str]) -> list[int]:
        order = list(range(len(replica_ids)))
        self._rng.shuffle(order)
        return order


POLICIES: dict[str, type] = {RoundRobin.name: RoundRobin, Random.name: Random}


def make_policy(name: str) -> PickPolicy:
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; known: {sorted(POLICIES)}") from None
