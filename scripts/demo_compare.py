"""The demo's comparison: RSD against target-only (and the draft alone) through a running Triton server.

    python scripts/demo_compare.py --url 127.0.0.1:8001 "What is 47+8-3+9?" ...

For each prompt: the RSD steps as the server streams them (accepted draft steps with their PRM
reward; steps the PRM rejected, with the draft's rejected text, and the target's rewrite), the
draft's and the target's answers; then a table of wall time (client side, median of --repeats
unary requests) and estimated FLOPs (the server's request stats: 2 x parameters x processed tokens,
draft + PRM + target) of RSD and target-only, per prompt and in total.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from runtime.clients.client import RsdClient, StepMessage
from runtime.task import grade


def stream_steps(client: RsdClient, prompt: str, method: str) -> list[StepMessage]:
    return list(client.stream(prompt, {"method": method}, stream=True))


def show_steps(client: RsdClient, prompt: str) -> None:
    """RSD's steps, marked accepted or rewritten; a rejected step shows the draft's own text.

    The draft is greedy, so up to the first rewritten step RSD's prefix is the draft's own: the
    draft-only solution's step there is exactly the step the PRM rejected.
    """
    rsd, draft = stream_steps(client, prompt, "rsd"), stream_steps(client, prompt, "draft")
    same_prefix = True
    print(f"\n{prompt}")
    for index, step in enumerate(rsd):
        source, reward = step.sources[0], step.rewards[0]
        text = step.text.strip()
        if source == "draft":
            print(f"  step {index + 1}  draft, PRM {reward:.3f} >= threshold: accepted   {text}")
            continue
        rejected = draft[index].text.strip() if same_prefix and index < len(draft) else "?"
        print(f"  step {index + 1}  draft wrote {rejected!r}, PRM {reward:.3f} < threshold: rejected;"
              f" target rewrote it: {text}")
        same_prefix = False
    answer = "".join(s.text for s in rsd)
    draft_text = "".join(s.text for s in draft)
    print(f"  RSD answer {'correct' if grade(prompt, answer) else 'WRONG'}; "
          f"draft alone {'correct' if grade(prompt, draft_text) else 'WRONG'}: {draft_text.split()[-1]}")


def timed(client: RsdClient, prompt: str, method: str, repeats: int) -> tuple[float, float, float]:
    """Median client wall time (s), FLOPs and target step share of one unary request."""
    times, message = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        message = client.generate(prompt, {"method": method})
        times.append(time.perf_counter() - start)
    stats = message.stats or {}
    return statistics.median(times), float(stats.get("total_flops", 0.0)), float(stats.get("target_step_share", 0.0))


def compare(client: RsdClient, prompts: list[str], repeats: int) -> None:
    print(f"\n{'prompt':<24}{'RSD ms':>8}{'target ms':>11}{'time ratio':>12}{'FLOPs ratio':>13}{'target steps':>14}")
    totals = [0.0, 0.0, 0.0, 0.0]
    for prompt in prompts:
        rsd, target = timed(client, prompt, "rsd", repeats), timed(client, prompt, "target", repeats)
        print(f"{prompt:<24}{rsd[0] * 1e3:>8.0f}{target[0] * 1e3:>11.0f}{rsd[0] / target[0]:>12.2f}"
              f"{rsd[1] / target[1]:>13.2f}{rsd[2]:>14.0%}")
        for i, value in enumerate((rsd[0], target[0], rsd[1], target[1])):
            totals[i] += value
    print(f"{'all prompts':<24}{totals[0] * 1e3:>8.0f}{totals[1] * 1e3:>11.0f}{totals[0] / totals[1]:>12.2f}"
          f"{totals[2] / totals[3]:>13.2f}")
    print("(RSD / target-only: time is client wall time, median of "
          f"{repeats} requests each; FLOPs = draft + PRM + target, from the server's request stats)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompts", nargs="+")
    parser.add_argument("--url", default="127.0.0.1:8001", help="the server's gRPC host:port")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    client = RsdClient(args.url, "grpc")
    for prompt in args.prompts:
        show_steps(client, prompt)
    compare(client, args.prompts, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
