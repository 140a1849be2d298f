"""Clients of a running server: the gRPC/HTTP client, the perf_analyzer load test, the soak."""
