"""Why the torch engine keeps torch twins of two core rules (issue 25), each against the one numpy
rule on the hot path they would share; interleaved, best of `--repeats`; the ratios go to
BENCHMARKS.md, "Designs tried and not taken" (the tables: docs/benchmarks-history.md). tests/test_sampling_agreement.py
checks that each twin agrees with its rule.
- scoring: runtime.core.sampling.sequence_logprob (float64) vs runtime.engines.torch.sampling.
  logprob_rows (float32 on the rows' device), GSI's target scoring of a candidate (rows [tokens, vocab]);
- drawing one token at T > 0 with top-p: core process + sample (numpy, after moving the row off
  the device) vs the engine's sample_token, once per generated token.

    .venv/bin/python scripts/bench_logprob.py --tokens 64 --vocab 4096,32000,151936
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runtime.core.sampling import process, sample, sequence_logprob  # noqa: E402
from runtime.engines.torch.sampling import logprob_rows, sample_token  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--vocab", default="4096,32000,151936")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print("| vocab | torch twin ms | numpy rule ms | numpy / torch |\n|---|---|---|---|")
    for vocab in (int(v) for v in args.vocab.split(",")):
        rows = torch.randn(args.tokens, vocab, generator=torch.Generator().manual_seed(0))
        tokens = [int(t) for t in np.random.default_rng(0).integers(0, vocab, args.tokens)]
        best = {"torch": float("inf"), "numpy": float("inf")}
        for _ in range(args.repeats):  # interleaved A/B
            for name, run in (("torch", lambda: logprob_rows(rows, tokens, 0.7)),
                              ("numpy", lambda: sequence_logprob(rows.numpy(), tokens, 0.7))):
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"| {vocab} | {best['torch'] * 1e3:.1f} | {best['numpy'] * 1e3:.1f} | {best['numpy'] / best['torch']:.2f} |")
    print("\n| vocab | sample_token us | core process + sample us | numpy / torch |\n|---|---|---|---|")
    for vocab in (int(v) for v in args.vocab.split(",")):
        row = torch.randn(vocab, generator=torch.Generator().manual_seed(1))
        gen, rng = torch.Generator().manual_seed(0), np.random.default_rng(0)
        best = {"torch": float("inf"), "numpy": float("inf")}
        for _ in range(args.repeats * 10):
            for name, run in (("torch", lambda: sample_token(row, 0.7, 0.9, gen)),
                              ("numpy", lambda: sample(process(row.numpy(), 0.7, 0.9), rng))):
                start = time.perf_counter()
                run()
                best[name] = min(best[name], time.perf_counter() - start)
        print(f"| {vocab} | {best['torch'] * 1e6:.0f} | {best['numpy'] * 1e6:.0f} | {best['numpy'] / best['torch']:.2f} |")


if __name__ == "__main__":
    main()
