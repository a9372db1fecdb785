"""The prompt's KV blocks hashed as a chain, exactly as vLLM's prefix cache hashes them.

vLLM (0.32, default `prefix_caching_hash_algo="sha256"`) hashes full blocks only:
    h_0 = sha256(pickle((NONE_HASH, tuple(block_0_tokens), None)))
    h_i = sha256(pickle((h_{i-1},  tuple(block_i_tokens), None)))
with NONE_HASH = sha256(pickle(seed)), seed = PYTHONHASHSEED or "vllm-none-hash", and its KV cache
events carry the low 64 bits of each hash as an int. The router computes the same ints, so an index
built from the engines' own events answers lookups for prompts the router has never seen.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections import OrderedDict
from typing import Sequence

DEFAULT_SEED = "vllm-none-hash"
_LOW_64 = (1 << 64) - 1


def _sha256(value) -> bytes:
    return hashlib.sha256(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)).digest()


class BlockHasher:
    """Hashes prompts' blocks; remembers the last `cache_blocks` block hashes, so a shared system
    prompt is hashed once (a dict lookup costs a tenth of pickling and hashing a block)."""

    def __init__(self, block_size: int, seed: str | None = None, cache_blocks: int = 65536):
        if block_size < 1:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        self._none_hash = _sha256(seed if seed is not None else os.getenv("PYTHONHASHSEED", DEFAULT_SEED))
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cache_blocks = cache_blocks

    def chain(self, token_ids: Sequence[int]) -> list[int]:
        """Event-format hashes (low 64 bits) of every full block of `token_ids`, in order.
        Token ids must be Python ints (as tokenizers return them)."""
        hashes, parent = [], self._none_hash
        size, cache = self.block_size, self._cache
        for start in range(0, len(token_ids) - size + 1, size):
            key = (parent, tuple(token_ids[start : start + size]))
            digest = cache.get(key)
            if digest is None:
                digest = _sha256((parent, key[1], None))
                cache[key] = digest
                if len(cache) > self._cache_blocks:
                    cache.popitem(last=False)
            else:
                cache.move_to_end(key)
            parent = digest
            hashes.append(int.from_bytes(digest, "big") & _LOW_64)
        return hashes
