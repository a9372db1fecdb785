"""The decode pool: vLLM engines in the KV-consumer role that pull prefill's KV and stream tokens."""
