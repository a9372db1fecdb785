"""Prompt and chat rendering to token ids, done once in the router for both pools.

The router tokenizes with the model's own tokenizer (the same files the engines load), so prefill,
decode and any prefix index see the same token ids.
"""

from __future__ import annotations

from router.errors import InvalidRequest
from pdserve.v1 import inference_pb2


class PromptTokenizer:
    def __init__(self, model_path: str):
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(model_path)

    def encode(self, request: inference_pb2.GenerateRequest) -> list[int]:
        if request.WhichOneof("input") == "chat":
            messages = [{"role": m.role, "content": m.content} for m in request.chat.messages]
            try:
                rendered = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            except Exception as exc:  # a template can reject a message order (e.g. two system turns)
                raise InvalidRequest(f"the chat could not be rendered: {exc}") from exc
            return self._tokenizer.encode(rendered, add_special_tokens=False)
        return self._tokenizer.encode(request.prompt)

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids)
