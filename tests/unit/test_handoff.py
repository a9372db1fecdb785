import json

import pytest

from kv_transfer.handoff import HandoffError, decode_params, handoff_block_count, handoff_from_vllm, prefill_params
from pdserve.v1 import handoff_pb2
from tests.unit.factories import vllm_prefill_params


def test_prefill_params_ask_for_a_remote_decode():
    assert prefill_params() == {"do_remote_decode": True, "do_remote_prefill": False}


def test_round_trip_through_the_wire_keeps_what_decode_needs():
    params = vllm_prefill_params()
    handoff = handoff_from_vllm(params, "NixlConnector")
    wire = handoff_pb2.KVHandoff.FromString(handoff.SerializeToString())
    back = decode_params(wire)
    for key in ("remote_engine_id", "remote_request_id", "remote_host", "remote_port", "tp_size", "remote_num_tokens"):
        assert back[key] == params[key]
    assert back["remote_block_ids"] == ([1, 2, 3],)
    assert back["do_remote_prefill"] is True and back["do_remote_decode"] is False
    assert back["transfer_mode"] == "pull"
    assert "remote_blocks_expiry_time" not in back  # None on the prefill side stays unset
    assert back["remote_prefill_cached_tokens"] == 0  # unmodelled keys travel in extra_json
    assert handoff_block_count(wire) == 3


def test_unmodelled_params_are_kept_as_json():
    handoff = handoff_from_vllm(vllm_prefill_params(new_field={"a": 1}), "NixlConnector")
    assert json.loads(handoff.extra_json)["new_field"] == {"a": 1}


def test_nothing_to_pull_gives_no_handoff():
    assert handoff_from_vllm(None, "NixlConnector") is None
    assert handoff_from_vllm(vllm_prefill_params(remote_block_ids=[]), "NixlConnector") is None


def test_flat_block_list_is_one_group():
    handoff = handoff_from_vllm(vllm_prefill_params(remote_block_ids=[4, 5]), "NixlConnector")
    assert [list(g.block_ids) for g in handoff.remote_block_groups] == [[4, 5]]


def test_missing_address_is_an_error():
    with pytest.raises(HandoffError, match="remote_host"):
        handoff_from_vllm(vllm_prefill_params(remote_host=None), "NixlConnector")
