"""The method registry: one strategy per name; the loop asks the method what it needs."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from runtime.core.errors import RequestValidationError
from runtime.core.methods.base import Engines, Method, Needs, Sessions, StepContext
from runtime.core.methods.bon import BestOfN
from runtime.core.methods.cos import CollaborativeSpeculation
from runtime.core.methods.gsi import Gsi
from runtime.core.methods.rsd import Rsd
from runtime.core.methods.sd import SpeculativeDecoding
from runtime.core.methods.single import SingleModel

METHODS: Mapping[str, Method] = MappingProxyType({
    "rsd": Rsd(),
    "gsi": Gsi(),
    "cos": CollaborativeSpeculation(),
    "sd": SpeculativeDecoding(),
    "target": SingleModel("target"),
    "draft": SingleModel("draft"),
    "bon": BestOfN(),
})


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise RequestValidationError("method", f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


__all__ = ["METHODS", "Engines", "Method", "Needs", "Sessions", "StepContext", "get_method"]
