"""`rsd client`: send one prompt to a running server and print the steps."""
from __future__ import annotations

import argparse
import json

from runtime.cli.flags import add_param_flags, param_values
from runtime.clients.client import RsdClient, StepMessage


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("client", help="send one prompt to a running server and print the steps")
    p.add_argument("--url", help="host:port (default 127.0.0.1:8001 for grpc, 127.0.0.1:8000 for http)")
    p.add_argument("--protocol", choices=("grpc", "http"), default="grpc")
    p.add_argument("--stream", action="store_true", help="print each step as it is decided")
    p.add_argument("--prompt", required=True)
    p.add_argument("--model", default="rsd")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for each response")
    p.add_argument("--json", action="store_true", help="print each response as one JSON line")
    add_param_flags(p)
    p.set_defaults(run=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    url = args.url or ("127.0.0.1:8001" if args.protocol == "grpc" else "127.0.0.1:8000")
    client = RsdClient(url, args.protocol, args.model, args.timeout)
    index = 0
    for message in client.stream(args.prompt, param_values(args), stream=args.stream):
        if args.json:
            print(json.dumps(_as_json(message)), flush=True)
            continue
        index = _print_message(message, index, args.stream)
    return 0


def _print_message(message: StepMessage, index: int, stream: bool) -> int:
    if stream:
        for source, reward in zip(message.sources, message.rewards):
            index += 1
            print(f"--- step {index} [{_mark(source, reward)}]\n{message.text.rstrip()}", flush=True)
    else:
        rewards = ", ".join("-" if r is None else f"{r:.3f}" for r in message.rewards)
        print(f"{message.text}\n--- {len(message.sources)} steps: {' '.join(message.sources)}\n    rewards: {rewards}")
    if message.final:
        stats = message.stats or {}
        print(f"=== finished: {message.finish_reason}; {stats.get('steps')} steps, {stats.get('tokens')} tokens, "
              f"{stats.get('wall_time_s', 0.0):.2f} s; target share {stats.get('target_step_share', 0):.0%} of steps",
              flush=True)
    return index


def _mark(source: str, reward: float | None) -> str:
    return source if reward is None else f"{source}, r={reward:.3f}"


def _as_json(message: StepMessage) -> dict[str, object]:
    return {"text": message.text, "sources": list(message.sources), "rewards": list(message.rewards),
            "finish_reason": message.finish_reason, "stats": message.stats}
