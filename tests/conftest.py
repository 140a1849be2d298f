"""Shared fixtures. The Triton server fixtures (one server per session) live in
runtime/testing/triton_fixture.py so the demo and other suites can reuse them."""
from runtime.testing.triton_fixture import pipeline_config, triton_server  # noqa: F401
