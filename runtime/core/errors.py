"""The typed error hierarchy. Serving converts these to Triton errors in exactly one place."""
from __future__ import annotations


class RsdError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(RsdError):
    """A configuration file or value is invalid; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class RequestValidationError(RsdError):
    """A request parameter is invalid; the message names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class EngineError(RsdError):
    """An engine (model backend, sub-model, PRM) failed or returned something unusable."""


class AccessDenied(RsdError):
    """A caller asked for something this server does not expose to it (e.g. an internal sub-model)."""


class Overloaded(EngineError):
    """The server is at capacity: the request was not started; the client should retry later
    (gRPC UNAVAILABLE, HTTP 503 with Retry-After where the front can set headers)."""

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(f"overloaded, retry later: {reason}")
        self.retry_after_s = retry_after_s
