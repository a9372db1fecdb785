from pathlib import Path

import pytest

from pdserve.config import ConfigError, load_config
from tests.unit.factories import make_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    load_config(path)


def test_local_config_is_the_embedded_default():
    config = load_config(CONFIGS / "local.yaml")
    assert (config.prefill.replicas, config.decode.replicas) == (1, 1)
    assert config.model.source.startswith("embedded:")
    assert config.router.host == config.kv_transfer.side_channel_host == config.ray.node_ip == "127.0.0.1"


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("prefill:\n  replicas: 1\n  replcas: 2\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert "prefill.replcas" in str(info.value)
    assert "Extra inputs are not permitted" in str(info.value)


def test_unreadable_yaml_names_the_file(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("prefill: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(bad)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"prefill": {"engine": {"device": "cuda"}}}, "same device"),
        ({"prefill": {"engine": {"block_size": 16}}}, "block_size"),
        ({"kv_transfer": {"side_channel_ports": [50000, 50100]}}, "grpc_port"),
        ({"kv_transfer": {"side_channel_ports": [70000, 70001]}}, "1024 <= first"),
        ({"router": {"grpc_port": 9000, "http_port": 9000}}, "ports must differ"),
        ({"observability": {"metrics_export_port": 8000}}, "ports must differ"),
        ({"kv_transfer": {"side_channel_ports": [8000, 8100]}, "router": {"http_port": 9001}}, "metrics_export_port 8080 lies inside"),
        ({"observability": {"tracing": {"exporter": "jaeger"}}}, "exporter"),
        ({"router": {"max_prompt_tokens": 4096}}, "max_model_len"),
        ({"decode": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}, "exceeds max_replicas"),
        ({"kv_transfer": {"buffer_device": "cuda"}}, "buffer_device"),
    ],
)
def test_cross_field_rules(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


def test_max_prompt_tokens_defaults_to_context_minus_one():
    assert make_config(model={"max_model_len": 512}).max_prompt_tokens == 511
