"""Calls a method starts for the request's next step before this step is decided.

RSD drafts step k + 1 while the PRM scores step k (`Rsd.step`): when step k is accepted, as most
are, the next draft step is already on its way, so the PRM's latency hides behind the draft's
instead of adding to it (through a server the two run in different processes:
docs/benchmarks-history.md, "The PRM off RSD's critical path through the server"). When step k is
rejected, the early call was for a prefix that will not happen: it is wasted work, recorded in the
request's usage like any call.

One pending call per role at most. Any later call on that role first settles it (the engine
session is never asked two things at once): its result is used when it asked exactly what that
call asks, seed aside (the step is then a draw from the same distribution: at temperature 0 the
same tokens, at T > 0 an independent sample, as a fresh call's would be), else it is awaited and
counted as waste. When the request ends, fails or is cancelled, the loop cancels what is left.
"""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from runtime.core.types import GenerateResult, StepRequest, Usage


@dataclass(slots=True)
class Lookahead:
    record: Callable[[str, Usage], None]  # adds a call's usage to the request's stats
    _calls: dict[str, tuple[StepRequest, asyncio.Future[GenerateResult]]] = field(default_factory=dict)
    started: int = 0  # early calls started, and how many of them were used (tests)
    used: int = 0

    def start(self, role: str, req: StepRequest, call: Awaitable[GenerateResult]) -> None:
        if role in self._calls:
            raise RuntimeError(f"a call on {role} is already pending")
        self._calls[role] = (req, asyncio.ensure_future(call))
        self.started += 1

    def pending(self, role: str) -> bool:
        return role in self._calls

    async def take(self, role: str, req: StepRequest) -> GenerateResult | None:
        """The pending call's result if it asked for `req` (seed aside), else None: then it was
        settled as waste and the role's session is free for the caller's own call."""
        if role not in self._calls:
            return None
        asked, future = self._calls.pop(role)
        result = await future
        if dataclasses.replace(asked, seed=req.seed) == req:
            self.used += 1
            return result
        self.record(role, result.usage)
        return None

    async def settle(self, role: str) -> None:
        """Await the role's pending call, if any, as waste (before any other call on the role)."""
        if role in self._calls:
            _, future = self._calls.pop(role)
            self.record(role, (await future).usage)

    async def close(self) -> None:
        """The request ended (its stats already went out with its last step): cancel what is
        still pending and wait until it stopped, so the sessions close with nothing in flight.
        Only a wrong guess of `StepContext.speculate`'s caller leaves a call pending here."""
        futures = [future for _, future in self._calls.values()]
        self._calls = {}
        for future in futures:
            future.cancel()
        if futures:
            await asyncio.wait(futures)
        for future in futures:
            if not future.cancelled():
                future.exception()  # retrieved: a failure of a call nobody needs is no error
