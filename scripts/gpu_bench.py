#!/usr/bin/env python3
"""GPU benchmark of the PyTorch engine: in-process RSD vs target-only at forced acceptance rates.

    python scripts/gpu_bench.py [--shapes real|tiny] [--device cuda] [--concurrency 1,8,32]
                                [--accept 0,0.5,0.9] [--max-tokens 192] [--out FILE.md]

Random-weight models with real shapes, built in memory (no downloads, nothing written): draft and
PRM backbone Qwen2.5-1.5B, target Qwen2.5-7B, bf16 (`--shapes tiny`: small float32 ones, for a
CPU check of this script). Text goes through the tests' character tokenizer: the models compute
their full vocabularies, sampling reads the tokenizer's first ids. The output heads' EOS rows are
zeroed so greedy requests run to `--max-tokens`; steps end at "\\n\\n" or `--step-tokens`.

The PRM is a real 1.5B backbone whose head turns each step's final hidden state into a
pseudo-uniform number in [0, 1) (frac(|sum h| * 9973)), so RSD at threshold 1 - a accepts about a
of the steps (`--accept`; the measured share is reported). Per concurrency c, 2c requests (at
least 4) run through each method: target-only, then RSD at each rate; the table gives output
tokens/s and the ratio to target-only at the same c.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "real": {  # Qwen2.5-1.5B and Qwen2.5-7B (config.json of the released models)
        "small": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                      num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
        "large": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                      num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
    },
    "tiny": {
        "small": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=320, tie_word_embeddings=True),
        "large": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=320, tie_word_embeddings=False),
    },
}
MAX_LEN = 4096


def random_lm(shape: dict[str, Any], dtype: Any, device: Any, seed: int, eos: int) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(**shape, max_position_embeddings=32768, rope_theta=1e6, attn_implementation="sdpa")
    torch.manual_seed(seed)
    with torch.device(device):  # initialised in place on the device, in `dtype`
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    with torch.no_grad():
        model.get_output_embeddings().weight[eos] = 0  # logit 0: never the greedy choice, so no early EOS
    return model.eval()


def pseudo_uniform_head() -> Any:
    import torch

    from runtime.engines.torch.prm import PrmHead

    def head(hidden: torch.Tensor) -> torch.Tensor:
        return torch.frac(hidden.float().sum(-1).abs() * 9973.0)

    return PrmHead(head, 0)


def build(shapes: str, device_name: str, max_rows: int) -> Any:
    import torch

    from runtime.core.methods import Engines
    from runtime.core.params import RequestParams
    from runtime.core.segment import StepSegmenter
    from runtime.engines.hf import load_tokenizer
    from runtime.engines.prm_format import value_head_format
    from runtime.engines.torch.factory import link_schedulers, lm_engine, prm_engine
    from runtime.pipeline import Pipeline
    from runtime.tiny_models import make_tokenizer

    device = torch.device(device_name)
    dtype = torch.bfloat16 if shapes == "real" else torch.float32
    folder = Path(tempfile.mkdtemp(prefix="gpu-bench-tok-"))
    make_tokenizer(folder)
    tok = load_tokenizer(folder, "tokenizer")
    eos = min(tok.eos_ids)
    segmenter = StepSegmenter(tok.piece, tok.eos_ids, "\n\n")
    sizes = SHAPES[shapes]
    draft = random_lm(sizes["small"], dtype, device, 1, eos)
    target = random_lm(sizes["large"], dtype, device, 2, eos)
    prm_backbone = random_lm(sizes["small"], dtype, device, 3, eos).model
    engines = Engines(
        draft=lm_engine("draft", draft.model, draft.lm_head, segmenter, device, max_rows, MAX_LEN, tok.vocab_size),
        target=lm_engine("target", target.model, target.lm_head, segmenter, device, max_rows, MAX_LEN, tok.vocab_size),
        prm=prm_engine(prm_backbone, pseudo_uniform_head(), device, max_rows, MAX_LEN,
                       value_head_format(tok, "prm")),
    )
    link_schedulers(engines)
    return Pipeline(engines, tok, segmenter, "Q: {question}\nA:\n", RequestParams(), MAX_LEN)


async def _run(pipeline: Any, params: Any, requests: int, concurrency: int) -> tuple[float, int, float | None]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            return await pipeline.generate(f"What is {i}+{i * 7 % 13}?", params)

    started = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(requests)))
    wall = time.perf_counter() - started
    tokens = sum(r.stats["tokens"] for r in results)
    drafted = sum(r.stats["steps_drafted"] for r in results)
    accepted = sum(r.stats["steps_accepted"] for r in results)
    return wall, tokens, (accepted / drafted if drafted else None)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="real")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--accept", default="0,0.5,0.9", help="forced step acceptance rates for RSD")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--step-tokens", type=int, default=32)
    parser.add_argument("--out", help="also write the table here")
    args = parser.parse_args()
    import torch
    import transformers

    if args.device == "cpu":
        torch.set_num_threads(1)  # tiny CPU check: one thread beats two competing ones
    levels = [int(c) for c in args.concurrency.split(",")]
    rates = [float(a) for a in args.accept.split(",")]
    started = time.perf_counter()
    pipeline = build(args.shapes, args.device, max_rows=max(64, 2 * max(levels)))
    _sync(args.device)
    print(f"models built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    base = dataclasses.replace(pipeline.defaults, temperature=0.0, max_tokens=args.max_tokens,
                               max_step_tokens=args.step_tokens, max_steps=1000, stop_at_boxed=False)
    methods = [("target", dataclasses.replace(base, method="target"), None)]
    # RSD keeps a step iff reward >= threshold; rewards are ~uniform in [0, 1): threshold 1 - a keeps ~a
    methods += [(f"rsd (accept {a:.0%})", dataclasses.replace(base, method="rsd", threshold=1.0 - a), a)
                for a in rates]
    asyncio.run(_run(pipeline, dataclasses.replace(base, method="rsd", max_tokens=8), 2, 2))  # warm-up
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    lines = [f"device {name}, torch {torch.__version__}, transformers {transformers.__version__}, "
             f"shapes {args.shapes}, max_tokens {args.max_tokens}, step cap {args.step_tokens}, "
             f"load average {os.getloadavg()[0]:.2f}", "",
             "| c | method | step acceptance (measured) | output tokens/s | vs target-only |", "|---:|---|---:|---:|---:|"]
    for c in levels:
        base_speed = None
        for label, params, _ in methods:
            wall, tokens, accepted = asyncio.run(_run(pipeline, params, max(4, 2 * c), c))
            _sync(args.device)
            speed = tokens / wall
            base_speed = base_speed or speed
            acc = f"{accepted:.0%}" if accepted is not None else "-"
            lines.append(f"| {c} | {label} | {acc} | {speed:.0f} | {speed / base_speed:.2f}x |")
            print(lines[-1], file=sys.stderr, flush=True)
    text = "\n".join(lines) + f"\n\ntotal {time.perf_counter() - started:.0f} s"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
