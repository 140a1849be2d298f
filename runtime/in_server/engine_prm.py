"""The PRM on a TensorRT-LLM engine: context-logit rows at the step positions become rewards.

TensorRT-LLM has no reward-model type: the PRM engine is a causal LM whose lm_head is the reward
head (build_engines/prm_remap.py), built with --gather_context_logits. For each row of a PRM
request (the torch_prm contract) this sends one `tensorrt_llm` request: input_ids = the row,
request_output_len 1, return_context_logits true, end_id = pad_id = 0 (below any engine
vocabulary, including the 1- or 2-wide vocabulary of the narrowed PRM classes). The manifest's
readout (runtime/engines/prm_readout.py) turns the rows at the requested positions into rewards:
value head sigmoid(row[0] + bias), two-class softmax(row[0:2])[1].

Usage: the tokens the engine ran for a row are the whole row (one context-logit row each);
concurrent rows count as one forward (the engine schedules requests that arrive together in one
iteration). An engine built with --gather_context_logits never reuses KV blocks: TensorRT-LLM
turns reuse off for it ("KV cache reuse disabled because model was built to return context
logits", trtGptModelInflightBatching.cpp fixExecutorConfig, 1.2.0rc2), so every row is run whole
and a reply with fewer rows than input tokens is an error.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.core.errors import ConfigError, EngineError, RsdError
from runtime.core.types import Usage
from runtime.engines.prm_readout import RewardReadout, reward_from_row
from runtime.engines.triton.contract import (
    LmCall,
    lm_request_tensors,
    parse_lm_reply,
    parse_prm_request,
    prm_reply_tensors,
)
from runtime.engines.triton.transport import SubModelTransport

log = logging.getLogger(__name__)

ENGINE_MANIFEST = "rsd_engine_manifest.json"  # = build_engines.manifest.ENGINE_MANIFEST
PRM_ENGINE_OUTPUTS = ("output_ids", "sequence_length", "context_logits")


def read_manifest(file: Path, key: str) -> dict[str, object]:
    """An engine's `rsd_engine_manifest.json` (written by `python -m build_engines` next to the engine)."""
    if not file.is_file():
        raise ConfigError(key, f"{file} does not exist (engines are built by `python -m build_engines`)")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(key, f"{file} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(key, f"{file} is not a manifest object")
    return data


def readout_of(manifest: Mapping[str, object], key: str) -> RewardReadout:
    """The reward rule recorded in a PRM engine's manifest."""
    prm = manifest.get("prm")
    if not isinstance(prm, dict):
        raise ConfigError(key, "the engine manifest has no `prm` readout (not a PRM engine?)")
    names = {f.name for f in dataclasses.fields(RewardReadout)}
    try:
        readout = RewardReadout(**{k: v for k, v in prm.items() if k in names})
    except (TypeError, RsdError) as exc:
        raise ConfigError(key, f"invalid `prm` readout in the engine manifest: {exc}") from exc
    if readout.bias is None:
        raise ConfigError(key, "the manifest's PRM bias is unknown (the prepare step did not run)")
    return readout


@dataclass(frozen=True, slots=True)
class EnginePrm:
    """PRM sub-model handler: the torch_prm contract in, one engine request per row."""

    transport: SubModelTransport
    engine: str  # the `tensorrt_llm` model serving the PRM engine
    readout: RewardReadout

    def release(self, keys: Sequence[str]) -> None:
        """Nothing is held per request here (the engine's KV blocks are reused by content)."""

    async def handle(self, tensors: Mapping[str, np.ndarray], key: str, kind: str = "generate") -> dict[str, np.ndarray]:
        call = parse_prm_request(tensors)
        keys = call.keys or (key,) * len(call.rows)
        scored = await asyncio.gather(*(self._row(row, positions, row_key)
                                        for row, positions, row_key in zip(call.rows, call.positions, keys)))
        rewards = [r for r, _ in scored]
        if not call.keys:
            return prm_reply_tensors(rewards, Usage(prefill_tokens=sum(ran for _, ran in scored), forwards=1))
        # rows of several BLS requests (row_keys): each key's usage on its first row
        per_key = [Usage(prefill_tokens=sum(scored[i][1] for i in rows), forwards=1)
                   for rows in call.groups().values()]
        return prm_reply_tensors(rewards, call.row_usage(per_key))

    async def _row(self, row: tuple[int, ...], positions: tuple[int, ...], key: str) -> tuple[list[float], int]:
        """The row's rewards, and the tokens the engine ran for it."""
        call = LmCall(row, 1, end_id=0, pad_id=0, context_logits=True)
        responses = await self.transport.infer(self.engine, lm_request_tensors(call), PRM_ENGINE_OUTPUTS, key)
        logits = parse_lm_reply(responses).context_logits
        if logits is None:
            raise EngineError(f"{self.engine} returned no context_logits (engine built without --gather_context_logits?)")
        if logits.shape[-1] < self.readout.num_labels:
            raise EngineError(f"{self.engine}: context-logit rows are {logits.shape[-1]} wide, the readout needs "
                              f"{self.readout.num_labels}")
        if logits.shape[0] != len(row):
            raise EngineError(f"{self.engine} returned {logits.shape[0]} context-logit rows for {len(row)} input tokens")
        return [reward_from_row(logits[p], self.readout) for p in positions], len(row)


def build_engine_prm(transport: SubModelTransport, engine: str, manifest: str | Path) -> EnginePrm:
    readout = readout_of(read_manifest(Path(manifest), "engine_manifest"), "engine_manifest")
    log.info("PRM engine %s: %s", engine, readout.formula)
    return EnginePrm(transport, engine, readout)
