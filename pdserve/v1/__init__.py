"""Generated protobuf and gRPC stubs for proto/pdserve/v1 (built by `make proto`, not edited by hand)."""
