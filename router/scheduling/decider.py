"""Whether a request is worth disaggregating.

Decode serves a request alone when the part of the prompt it would have to compute itself is
short: the tokens not already in the chosen decode replica's prefix cache. Below the threshold a
local prefill costs less than a prefill hop plus a KV transfer (and vLLM would recompute prompts
under its `kv_recompute_threshold` anyway). A request for a single output token has no decode
phase at all: prefill would end it, and the KV blocks it kept for decode's pull would wait out
their lease. It is served colocated too.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DisaggregationDecider:
    min_uncached_tokens: int  # disaggregate only when decode would compute at least this many

    def disaggregate(self, prompt_tokens: int, decode_cached_tokens: int, max_tokens: int = 0) -> tuple[bool, str]:
        if max_tokens == 1:
            return False, "one output token: no decode phase"
        uncached = max(0, prompt_tokens - decode_cached_tokens)
        if uncached < self.min_uncached_tokens:
            return False, f"{uncached} uncached tokens < {self.min_uncached_tokens}"
        return True, f"{uncached} uncached tokens"
