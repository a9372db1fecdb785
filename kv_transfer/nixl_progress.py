"""Give NIXL's progress thread a pause between polls (a vLLM general plugin).

NIXL's Python wrapper (1.5.1) starts the agent's progress thread with `pthrDelay = 0`: the thread
polls UCX without pause. On GPU hosts with cores to spare that buys microseconds; on a small CPU
host it costs each engine more than a core, idle or not (measured here: an idle prefill engine's
worker at 160% CPU; three engines on two cores made a 760-token prefill take 6 s instead of 1.5 s).
vLLM exposes no setting for it, so this plugin, which vLLM loads in every process it starts
(engine core and workers, through the `vllm.general_plugins` entry point), replaces that 0 with
`PDSERVE_NIXL_PROGRESS_DELAY_US` microseconds when the variable is set. pdserve sets it for CPU
engines (`kv_transfer.progress_delay_us`); unset, NIXL behaves exactly as shipped.
"""

from __future__ import annotations

import importlib
import logging
import os

ENV = "PDSERVE_NIXL_PROGRESS_DELAY_US"
logger = logging.getLogger("pdserve.nixl_progress")


def register() -> None:
    """Entry point; vLLM may call it several times per process."""
    value = os.environ.get(ENV)
    if not value:
        return
    delay_us = int(value)
    for name in ("nixl_cu12._api", "nixl_cu13._api", "nixl._api"):
        try:
            api = importlib.import_module(name)
        except ImportError:
            continue
        bindings = getattr(api, "nixlBind", None)
        if bindings is None or isinstance(bindings, _BindingsWithDelay):
            continue
        api.nixlBind = _BindingsWithDelay(bindings, delay_us)
        logger.debug("%s: NIXL progress thread delay set to %d us", name, delay_us)


class _BindingsWithDelay:
    """The NIXL bindings module, except that agent configs keep our progress-thread delay."""

    def __init__(self, bindings, delay_us: int):
        self._bindings = bindings
        base = bindings.nixlAgentConfig

        class AgentConfigWithDelay(base):
            def __setattr__(self, name, value):
                if name == "pthrDelay":
                    value = delay_us
                super().__setattr__(name, value)

        self.nixlAgentConfig = AgentConfigWithDelay

    def __getattr__(self, name):
        return getattr(self._bindings, name)
