"""Clients and fronts that talk to a running Triton server (never imported by tritonserver)."""
