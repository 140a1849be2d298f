#!/usr/bin/env python3
"""The request matrix of the first GPU run (scripts/gpu_first_run.sh), against a running server.

Every method, greedy: its text must equal the PyTorch path in process on the same models (the
`torch` reference, here on the GPU); streamed, its steps must concatenate to the unary text; with
return_log_probs, one log-prob per token of the text's steps; with a logit bias (embedding_bias
through the engines), it must answer. Methods the layout cannot serve (`--unsupported`: on
TensorRT-LLM engines gsi and cos need the target's context logits) must fail with an error naming
gather_context_logits. Prints a pass/fail table; exit 1 on any FAIL.

    .venv/bin/python scripts/first_run_checks.py --url 127.0.0.1:8001 --pipeline configs/default.yaml \
        [--unsupported gsi,cos] [--reference-dtype float16] [--dry-run]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runtime.clients.client import RsdClient, ServerError

METHODS = ("rsd", "target", "draft", "bon", "sd", "gsi", "cos")
PROMPTS = ("What is 12+35?", "What is 9+8-3+6?")
GREEDY = {"temperature": 0.0, "max_tokens": 48, "n": 3, "threshold": 0.5}
BIAS = {"embedding_bias_words": ["1"], "embedding_bias_weights": [4.0]}
CASES = ("greedy = torch path", "stream = unary", "log-probs", "logit bias")


@dataclass(frozen=True, slots=True)
class Row:
    method: str
    case: str
    result: str  # PASS | FAIL | EXPECTED ERROR
    detail: str = ""


def plan(methods: tuple[str, ...], unsupported: frozenset[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, case, request parameters) of every request the checks send."""
    out = []
    for method in methods:
        params = {**GREEDY, "method": method}
        if method in unsupported:
            out.append((method, "refused: gather_context_logits", params))
            continue
        out += [(method, CASES[0], params), (method, CASES[1], {**params, "stream": True}),
                (method, CASES[2], {**params, "return_log_probs": True}), (method, CASES[3], {**params, **BIAS})]
    return out


def check_method(client: RsdClient, reference: Callable[[str, dict[str, Any]], str] | None, method: str,
                 unsupported: bool) -> list[Row]:
    params = {**GREEDY, "method": method}
    if unsupported:
        try:
            client.generate(PROMPTS[0], params)
        except ServerError as exc:
            ok = "gather_context_logits" in str(exc)
            return [Row(method, "refused: gather_context_logits", "EXPECTED ERROR" if ok else "FAIL", str(exc)[:80])]
        return [Row(method, "refused: gather_context_logits", "FAIL", "it answered")]
    rows = []
    for case, run in ((CASES[0], lambda: _greedy(client, reference, params)),
                      (CASES[1], lambda: _stream(client, params)),
                      (CASES[2], lambda: _logprobs(client, params)),
                      (CASES[3], lambda: _bias(client, params))):
        try:
            detail = run()
            rows.append(Row(method, case, "PASS", detail))
        except Exception as exc:  # every failed check is a row, none stops the others
            rows.append(Row(method, case, "FAIL", f"{type(exc).__name__}: {exc}"[:120]))
    return rows


def _greedy(client: RsdClient, reference: Callable[[str, dict[str, Any]], str] | None, params: dict[str, Any]) -> str:
    for prompt in PROMPTS:
        got = client.generate(prompt, params).text
        if reference is not None:
            want = reference(prompt, params)
            if got != want:
                raise AssertionError(f"{prompt!r}: served {got!r} != torch {want!r}")
    return "equal" if reference is not None else "answered (no reference)"


def _stream(client: RsdClient, params: dict[str, Any]) -> str:
    steps = list(client.stream(PROMPTS[0], params))
    whole = client.generate(PROMPTS[0], params).text
    if not steps or not steps[-1].final or "".join(s.text for s in steps) != whole:
        raise AssertionError(f"{len(steps)} streamed steps do not concatenate to the unary text")
    return f"{len(steps)} steps"


def _logprobs(client: RsdClient, params: dict[str, Any]) -> str:
    steps = list(client.stream(PROMPTS[0], {**params, "return_log_probs": True}))
    counts = [len(s.log_probs or ()) for s in steps]
    if not all(counts) or any(lp > 0 for s in steps for lp in (s.log_probs or ())):
        raise AssertionError(f"log-probs per step: {counts}")
    return f"{sum(counts)} log-probs"


def _bias(client: RsdClient, params: dict[str, Any]) -> str:
    return f"{len(client.generate(PROMPTS[0], {**params, **BIAS}).text)} characters"


def torch_reference(pipeline_yaml: str, device: str, dtype: str | None) -> Callable[[str, dict[str, Any]], str]:
    """The same pipeline in process on the PyTorch engine (on `device`, weights in `dtype`)."""
    from runtime.assembly.torch import build_pipeline
    from runtime.config import load_config

    cfg = load_config(pipeline_yaml)
    models = {role: dataclasses.replace(m, device=device, dtype=dtype or m.dtype)
              for role in ("draft", "target", "prm") if (m := getattr(cfg, role)) is not None}
    pipeline = build_pipeline(dataclasses.replace(cfg, **models))
    return lambda prompt, params: pipeline.generate_sync(prompt, params).text


def table(rows: list[Row]) -> str:
    lines = ["| method | check | result | detail |", "|---|---|---|---|"]
    lines += [f"| {r.method} | {r.case} | {r.result} | {r.detail} |" for r in rows]
    failed = sum(r.result == "FAIL" for r in rows)
    lines.append(f"\n{len(rows) - failed} of {len(rows)} checks passed" + (f", {failed} FAILED" if failed else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC host:port")
    p.add_argument("--pipeline", required=True, help="the server's pipeline YAML (the torch reference's models)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--unsupported", default="", help="methods that must be refused (comma-separated)")
    p.add_argument("--reference-device", default="auto", help="device of the torch reference (auto: cuda if any)")
    p.add_argument("--reference-dtype", default=None, help="weights of the torch reference (default: the config's)")
    p.add_argument("--no-reference", action="store_true", help="skip the torch comparison (answers only)")
    p.add_argument("--dry-run", action="store_true", help="print the requests it would send; contact nothing")
    args = p.parse_args(argv)
    methods = tuple(m for m in args.methods.split(",") if m)
    unsupported = frozenset(m for m in args.unsupported.split(",") if m)
    if args.dry_run:
        for method, case, params in plan(methods, unsupported):
            print(f"+ request {args.url} rsd {case}: {params}")
        if not args.no_reference:
            print(f"+ torch reference: {args.pipeline} on {args.reference_device} ({args.reference_dtype or 'its dtype'})")
        return 0
    reference = None if args.no_reference else torch_reference(args.pipeline, args.reference_device, args.reference_dtype)
    client = RsdClient(args.url, "grpc", timeout_s=300)
    rows = [row for m in methods for row in check_method(client, reference, m, m in unsupported)]
    print(table(rows))
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
