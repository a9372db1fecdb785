import socket

import pytest

from kv_transfer.settings import KVTransferSettings


def test_replicas_start_at_their_own_slot():
    settings = KVTransferSettings(side_channel_ports=(21000, 21099))
    assert settings.claim_side_channel_port(0) == 21000
    assert settings.claim_side_channel_port(100 + 1) == 21000 + 101 % 100


def test_auto_ports_are_distinct_and_free():
    settings = KVTransferSettings(side_channel_ports="auto")
    held = []
    try:
        for _ in range(4):
            port = settings.claim_side_channel_port()
            sock = socket.socket()
            sock.bind(("127.0.0.1", port))  # free when claimed; hold it like a running engine would
            held.append(sock)
        assert len({s.getsockname()[1] for s in held}) == 4
    finally:
        for s in held:
            s.close()


def test_range_skips_ports_held_by_another_replica():
    with socket.socket() as first:
        first.bind(("127.0.0.1", 0))
        busy = first.getsockname()[1]
        settings = KVTransferSettings(side_channel_ports=(busy, busy + 5))
        assert settings.claim_side_channel_port() != busy


def test_exhausted_range_is_a_clear_error():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        with pytest.raises(RuntimeError, match="no free side-channel port"):
            KVTransferSettings(side_channel_ports=(busy, busy)).claim_side_channel_port()


def test_engine_environment_names_the_side_channel_and_keeps_ucx_on_loopback():
    env = KVTransferSettings().engine_environment(15600)
    assert env == {
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
        "VLLM_NIXL_SIDE_CHANNEL_PORT": "15600",
        "UCX_NET_DEVICES": "lo",
        "PDSERVE_NIXL_PROGRESS_DELAY_US": "200",
    }
    assert "PDSERVE_NIXL_PROGRESS_DELAY_US" not in KVTransferSettings(progress_delay_us=None).engine_environment(1)


def test_vllm_config_carries_role_policy_and_lease():
    config = KVTransferSettings(failure_policy="fail", lease_seconds=12).vllm_config("kv_consumer", "d-1")
    assert (config.kv_role, config.kv_connector, config.kv_load_failure_policy) == ("kv_consumer", "NixlConnector", "fail")
    assert config.kv_connector_extra_config["kv_lease_duration"] == 12
    assert config.engine_id == "d-1"
