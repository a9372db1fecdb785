"""Dropping the first token from decode's stream, because the router already sent prefill's.

Decode re-samples the first token (vLLM's connector recomputes the prompt's last position), and
the router sends every request's sampling seed to both engines, so the two first tokens agree.
vLLM may coalesce several steps into one delta when the consumer lags, so the skip works on the
accumulated text rather than on the first delta.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class FirstTokenSkipper:
    expected_token: int | None
    expected_text: str
    tokens_left: int = 0
    text_sent: int = 0
    text_seen: str = ""
    mismatched: bool = False

    @classmethod
    def for_request(cls, request) -> "FirstTokenSkipper":
        if request.HasField("first_token_id"):
            return cls(request.first_token_id, request.first_token_text, tokens_left=1, text_sent=len(request.first_token_text))
        return cls(None, "")

    def feed(self, token_ids: list[int], text: str) -> tuple[list[int], str]:
        """The part of one engine delta the client has not seen yet."""
        if self.tokens_left and token_ids:
            if token_ids[0] != self.expected_token:
                self.mismatched = True
            token_ids = token_ids[1:]
            self.tokens_left = 0
        if self.expected_token is None:
            return token_ids, text
        self.text_seen += text
        fresh = self.text_seen[self.text_sent :]
        self.text_sent = max(self.text_sent, len(self.text_seen))
        return token_ids, fresh
