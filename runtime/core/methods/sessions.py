"""The models a pipeline serves (`Engines`) and one request's sessions on them (`Sessions`).

A method declares what it needs (`Needs`): the roles it calls and the interfaces they must offer,
so a request is refused up front when the configured engines cannot serve its method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from runtime.core.errors import RequestValidationError
from runtime.core.protocols import Engine, ScorerSession, Session, StepSession, TokenSession


@dataclass(frozen=True, slots=True)
class Needs:
    """Engines a method needs for given parameters: roles and the interfaces they must offer."""

    step_roles: tuple[str, ...] = ()  # roles used through a StepSession
    token_roles: tuple[str, ...] = ()  # roles used through a TokenSession
    prm: bool = False

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.step_roles + self.token_roles + (("prm",) if self.prm else ())))


@dataclass(frozen=True, slots=True)
class Engines:
    """The models one pipeline serves, by role. `draft` and `target` share a tokenizer."""

    draft: Any = None
    target: Any = None
    prm: Engine | None = None

    def role(self, name: str) -> Any:
        engine = getattr(self, name)
        if engine is None:
            raise RequestValidationError("method", f"needs a {name} model, and none is configured")
        return engine

    def open(self, key: str, needs: Needs) -> Sessions:
        """One session per role the method needs; the caller closes them (`with` or `close`)."""
        sessions = Sessions(self)
        try:
            for name in needs.roles:
                sessions.by_role[name] = self.role(name).open(key)
            sessions.check(needs)
        except BaseException:
            sessions.close()
            raise
        return sessions


@dataclass(slots=True)
class Sessions:
    """One request's sessions on the engines, by role: its KV caches and the ids engines hold."""

    engines: Engines
    by_role: dict[str, Session] = field(default_factory=dict)

    def role(self, name: str) -> Any:
        """The session of a role `check` found offering what the method calls."""
        return self.by_role[name]

    def check(self, needs: Needs) -> None:
        for name in needs.step_roles:
            if not isinstance(self.by_role[name], StepSession):
                raise RequestValidationError("method", f"the {name} engine cannot generate steps")
        for name in needs.token_roles:
            if not isinstance(self.by_role[name], TokenSession):
                raise RequestValidationError("method", f"the {name} engine does not expose token logits")
        if needs.prm and not isinstance(self.by_role["prm"], ScorerSession):
            raise RequestValidationError("method", "the prm engine cannot score steps")

    def close(self) -> None:
        while self.by_role:
            self.by_role.popitem()[1].close()

    def __enter__(self) -> Sessions:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
