"""The prefill -> decode handoff as typed code.

The wire contract is `pdserve.v1.KVHandoff` (proto/pdserve/v1/handoff.proto). This module is the
only place that knows how it maps onto vLLM's connector parameters (`kv_transfer_params`):

    prefill_params()                     what the prefill engine's request carries (KV producer role)
    handoff_from_vllm(params)            prefill output's params -> KVHandoff message
    decode_params(handoff)               KVHandoff message -> decode request's params (KV consumer role)

A parameter vLLM adds that this contract does not model travels in `extra_json`, so a newer
connector keeps working; the modelled ones are typed so that the router and the metrics can read them.
"""

from __future__ import annotations

import json
from typing import Any

from pdserve.v1 import handoff_pb2

_MODELLED = {
    "do_remote_prefill",
    "do_remote_decode",
    "remote_engine_id",
    "remote_request_id",
    "remote_host",
    "remote_port",
    "remote_block_ids",
    "remote_num_tokens",
    "tp_size",
    "pp_size",
    "dcp_size",
    "remote_blocks_expiry_time",
    "transfer_mode",
}


class HandoffError(ValueError):
    """The prefill engine returned connector parameters that cannot be handed to decode."""


def prefill_params() -> dict[str, Any]:
    """Connector parameters for a prefill request: compute the prompt, keep its blocks for a remote decode."""
    return {"do_remote_decode": True, "do_remote_prefill": False}


def handoff_from_vllm(params: dict[str, Any] | None, connector: str) -> handoff_pb2.KVHandoff | None:
    """The KVHandoff for a finished prefill, or None when the engine kept nothing to pull."""
    if not params or not params.get("remote_block_ids"):
        return None
    missing = [k for k in ("remote_engine_id", "remote_host", "remote_port") if params.get(k) in (None, "")]
    if missing:
        raise HandoffError(f"prefill returned kv_transfer_params without {', '.join(missing)}")
    groups = params["remote_block_ids"]
    if groups and isinstance(groups[0], int):  # single-group layout of older connectors
        groups = [groups]
    extra = {k: v for k, v in params.items() if k not in _MODELLED}
    return handoff_pb2.KVHandoff(
        connector=connector,
        remote_engine_id=str(params["remote_engine_id"]),
        remote_request_id=str(params.get("remote_request_id") or ""),
        remote_host=str(params["remote_host"]),
        remote_port=int(params["remote_port"]),
        remote_block_groups=[handoff_pb2.BlockGroup(block_ids=list(g)) for g in groups],
        remote_num_tokens=int(params.get("remote_num_tokens") or 0),
        tp_size=int(params.get("tp_size") or 1),
        pp_size=int(params.get("pp_size") or 1),
        dcp_size=int(params.get("dcp_size") or 1),
        remote_blocks_expiry_time=float(params.get("remote_blocks_expiry_time") or 0.0),
        transfer_mode=str(params.get("transfer_mode") or ""),
        extra_json=json.dumps(extra) if extra else "",
    )


def decode_params(handoff: handoff_pb2.KVHandoff) -> dict[str, Any]:
    """Connector parameters for the decode request that pulls the blocks named by `handoff`."""
    params: dict[str, Any] = json.loads(handoff.extra_json) if handoff.extra_json else {}
    params.update(
        do_remote_prefill=True,
        do_remote_decode=False,
        remote_engine_id=handoff.remote_engine_id,
        remote_request_id=handoff.remote_request_id,
        remote_host=handoff.remote_host,
        remote_port=handoff.remote_port,
        remote_block_ids=tuple(list(g.block_ids) for g in handoff.remote_block_groups),
        remote_num_tokens=handoff.remote_num_tokens,
        tp_size=handoff.tp_size,
        pp_size=handoff.pp_size,
        dcp_size=handoff.dcp_size,
    )
    if handoff.remote_blocks_expiry_time:
        params["remote_blocks_expiry_time"] = handoff.remote_blocks_expiry_time
    if handoff.transfer_mode:
        params["transfer_mode"] = handoff.transfer_mode
    return params


def handoff_block_count(handoff: handoff_pb2.KVHandoff | None) -> int:
    return 0 if handoff is None else sum(len(g.block_ids) for g in handoff.remote_block_groups)
