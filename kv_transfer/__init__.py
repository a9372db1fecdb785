"""The prefill -> decode KV handoff: contract (handoff.py) and transfer settings (settings.py)."""
