"""The prefill pool: vLLM engines in the KV-producer role, clamped to one output token."""
