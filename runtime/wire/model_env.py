"""The environment `rsd serve` (runtime.deploy.server) hands the models inside tritonserver:
one place for the names both sides read, so the launcher imports no model-side code."""
from __future__ import annotations

TOKEN_ENV = "RSD_INTERNAL_TOKEN"  # the per-start token sub-models require of every request
DRAIN_ENV = "RSD_DRAIN_FILE"  # the file exists while the server drains (new requests refused)
ABORT_SUFFIX = ".abort"  # DRAIN_ENV's path + this exists once the drain's grace expired
URL_ENV = "RSD_GRPC_URL"  # host:port of the server's gRPC endpoint: how the BLS reaches sub-models
# "Bearer KEY" when inference is keyed (rsd serve --api-key): the BLS's own sub-requests carry it
INFER_AUTH_ENV = "RSD_INFER_AUTHORIZATION"
INFER_AUTH_METADATA = "triton-grpc-protocol-authorization"  # the gRPC metadata key Triton checks for it
