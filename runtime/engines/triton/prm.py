"""The process reward model behind Triton: scorer sessions over the PRM contract.

The BLS formats the PRM input itself (`runtime.engines.prm_format`: question and accepted steps
encoded once per request, each candidate step encoded on its own) and sends one row per
candidate, prefix + candidate ids, with the reward read at the candidate's last token. The
sub-model only runs backbone + head; rows sharing the request's prefix reuse its KV cache, and
it reports what it ran (both PRM sub-models are ours). A request's session holds its key and
its PRM ids.

Under concurrency the rows of several requests travel in one sub-request (`PrmBatcher`): a PRM
call is a small forward behind a round trip through tritonserver, and per call the round trip
costs more CPU than the forward (measured at c = 16: about 10 ms of CPU per call over the BLS,
tritonserver and the PRM stub). Rows wait until every open request has queued its rows or
`max_wait_s` (5 ms) passed, and while one sub-request is out; then they go together, each
tagged with its request (row_keys), so each still reuses its own request's KV cache. A lone
request's row goes at once. The wait hides behind RSD's early next draft step (runtime.core.
lookahead), which runs while the step is scored.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from runtime.core.errors import EngineError
from runtime.core.types import RewardRequest, RewardResult, Usage
from runtime.engines.prm_format import PrmFormat, PrmHistory
from runtime.engines.triton.contract import (
    PRM_OUTPUTS,
    PrmCall,
    parse_prm_reply,
    parse_row_usage,
    prm_request_tensors,
)
from runtime.engines.triton.transport import SubModelTransport

Rows = tuple[tuple[int, ...], ...]


@dataclass(slots=True)
class _Waiting:
    key: str
    rows: Rows
    positions: Rows
    future: asyncio.Future[tuple[list[list[float]], Usage]]


@dataclass(slots=True)
class PrmBatcher:
    """One PRM sub-request at a time, carrying every row that arrived while the last was out."""

    model: str
    transport: SubModelTransport
    max_rows: int = 32  # rows per sub-request (a request's rows never split)
    max_wait_s: float = 0.005  # how long queued rows wait for the other open requests' rows
    open_requests: int = 0  # PRM sessions open now (TritonPRM.open / TritonPrmSession.close)
    sent: int = 0  # sub-requests sent and rows in them (tests, logs)
    rows_sent: int = 0
    _queue: list[_Waiting] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _arrived: asyncio.Event | None = None

    async def score(self, key: str, rows: Rows, positions: Rows) -> tuple[list[list[float]], Usage]:
        """Rewards of the request's rows, and what the PRM ran for them."""
        future: asyncio.Future[tuple[list[list[float]], Usage]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(key, rows, positions, future))
        if self._arrived is not None:
            self._arrived.set()
        if self._task is None:
            self._task = asyncio.ensure_future(self._drain())
        return await future

    async def _gather(self) -> None:
        """Wait (up to max_wait_s) until every open request has rows queued, or max_rows are."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while (len({item.key for item in self._queue}) < self.open_requests
               and sum(len(item.rows) for item in self._queue) < self.max_rows):
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived = asyncio.Event()
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                return
            finally:
                self._arrived = None

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # requests woken by the same event queue their rows first
            while self._queue:
                await self._gather()
                batch, count = [], 0
                while self._queue and (not batch or count + len(self._queue[0].rows) <= self.max_rows):
                    item = self._queue.pop(0)
                    if not item.future.done():  # its request was cancelled meanwhile
                        batch.append(item)
                        count += len(item.rows)
                if batch:
                    await self._send(batch)
        finally:
            self._task = None
            stranded, self._queue = self._queue, []  # left only when the drain was cancelled (shutdown)
            for item in stranded:
                if not item.future.done():
                    item.future.set_exception(EngineError(f"{self.model}: the server is shutting down"))

    async def _send(self, batch: list[_Waiting]) -> None:
        call = PrmCall(tuple(r for item in batch for r in item.rows),
                       tuple(p for item in batch for p in item.positions),
                       tuple(item.key for item in batch for _ in item.rows))
        try:
            responses = await self.transport.infer(self.model, prm_request_tensors(call), PRM_OUTPUTS, batch[0].key)
            rewards, usage = parse_prm_reply(responses, call), parse_row_usage(responses, len(call.rows))
            if usage is None:
                raise EngineError(f"{self.model} reported no usage")
        except BaseException as exc:
            error = exc if isinstance(exc, EngineError) else EngineError(f"{self.model}: {type(exc).__name__}: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.sent += 1
        self.rows_sent += len(call.rows)
        start = 0
        for item in batch:
            end = start + len(item.rows)
            if not item.future.done():
                item.future.set_result((rewards[start:end], sum(usage[start:end], Usage())))
            start = end


@dataclass(slots=True)
class TritonPRM:
    model: str
    transport: SubModelTransport
    fmt: PrmFormat
    num_params: int
    batcher: PrmBatcher = field(init=False)  # rows of concurrent requests in one sub-request

    def __post_init__(self) -> None:
        self.batcher = PrmBatcher(self.model, self.transport)

    def open(self, key: str) -> TritonPrmSession:
        self.batcher.open_requests += 1
        return TritonPrmSession(self, key, PrmHistory(self.fmt))


@dataclass(slots=True)
class TritonPrmSession:
    prm: TritonPRM
    key: str
    history: PrmHistory
    closed: bool = False

    async def reward(self, req: RewardRequest) -> RewardResult:
        prm = self.prm
        prefix = tuple(self.history.prefix(req.question, req.steps))
        rows = tuple(prefix + tuple(prm.fmt.step_ids(text)) for text in req.candidates)
        rewards, used = await prm.batcher.score(self.key, rows, tuple((len(row) - 1,) for row in rows))
        return RewardResult(tuple(r[0] for r in rewards), used)

    def close(self) -> None:
        """The request ended: the sub-model frees its cache (told with the next PRM sub-request)."""
        if not self.closed:
            self.prm.batcher.open_requests -= 1
            self.prm.transport.release(self.prm.model, self.key)
        self.closed = True
