"""A soak of a running server: many concurrent clients, mixed methods, for minutes.

    python scripts/soak.py --url 127.0.0.1:8001 --minutes 10 --concurrency 16   (or start one: --serve)

Each client thread sends one request after another (gRPC, streamed and unary alternately),
cycling through the methods of the mix. Counted: requests, errors (with their messages),
latency, and the resident memory of every server process after a warm-up and at the end.
A request the server refused before starting it because it was full (ServerError.overloaded:
UNAVAILABLE "Exceeds maximum queue size" or "overloaded, retry later") is not an error: it is
counted in `refused`, with how long the refusal took; an error is a request that failed after it
was admitted, or hung (no response within the client's timeout).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runtime.clients.client import RsdClient, ServerError

# The mix: rsd, target, sd and gsi with n = 4, plus the other methods.
MIX: tuple[dict[str, Any], ...] = (
    {"method": "rsd"}, {"method": "target"}, {"method": "sd"}, {"method": "gsi", "n": 4},
    {"method": "cos"}, {"method": "draft"}, {"method": "bon", "n": 3},
)
PROMPTS = ("What is 23+7-5+2?", "What is 9+8-3+6?", "What is 47+8-3+9-6?", "What is 12-4+30?",
           "What is 5+5+5-1?", "What is 81-9+2?")


def percentile(values: list[float], q: float) -> float:
    """The q-quantile of `values` (nearest rank below; nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(slots=True)
class SoakResult:
    duration_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)  # seconds until each refusal (the server was full)
    hangs: int = 0  # of the errors: requests that got no response within the client's timeout
    by_method: dict[str, int] = field(default_factory=dict)
    rss_start: dict[str, int] = field(default_factory=dict)  # process -> bytes, after the warm-up
    rss_end: dict[str, int] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + len(self.errors) + len(self.refused)

    def percentile(self, q: float) -> float:
        return percentile(self.latencies_s, q)

    def rss_growth(self) -> dict[str, float]:
        """Relative growth per process present at both ends (0.05 = 5%)."""
        return {p: self.rss_end[p] / self.rss_start[p] - 1 for p in self.rss_start if p in self.rss_end}

    def summary(self) -> str:
        lines = [f"{self.requests} requests in {self.duration_s:.0f} s ({self.requests / max(self.duration_s, 1e-9):.2f}"
                 f" req/s), {len(self.errors)} errors; latency p50 {self.percentile(0.5):.2f} s, "
                 f"p99 {self.percentile(0.99):.2f} s, max {max(self.latencies_s, default=float('nan')):.2f} s",
                 f"refused as overloaded: {len(self.refused)} (slowest refusal "
                 f"{max(self.refused, default=0.0):.2f} s); hangs: {self.hangs}",
                 "by method: " + ", ".join(f"{m} {n}" for m, n in sorted(self.by_method.items()))]
        for proc, start in sorted(self.rss_start.items()):
            end = self.rss_end.get(proc)
            if end is not None:
                lines.append(f"  RSS {proc}: {start / 2**20:.1f} MiB -> {end / 2**20:.1f} MiB ({end / start - 1:+.1%})")
        lines += [f"  error: {e}" for e in self.errors[:10]]
        return "\n".join(lines)


def soak(grpc_url: str, seconds: float, concurrency: int = 16, warmup_s: float = 20.0,
         processes: Callable[[], Mapping[str, int]] | None = None, rss: Callable[[int], int] | None = None,
         mix: Sequence[Mapping[str, Any]] = MIX, base: Mapping[str, Any] | None = None,
         timeout_s: float = 120.0) -> SoakResult:
    """Run `concurrency` clients for `warmup_s + seconds`; RSS is read after the warm-up and at the end."""
    result = SoakResult()
    lock = threading.Lock()
    started = time.monotonic()
    deadline = started + warmup_s + seconds
    params = {"max_tokens": 48, **(base or {})}

    def client(worker: int) -> None:
        cycle = itertools.count(worker)
        while time.monotonic() < deadline:
            i = next(cycle)
            chosen = {**params, **mix[i % len(mix)], "seed": i}
            t0 = time.monotonic()
            try:
                messages = list(RsdClient(grpc_url, "grpc", timeout_s=timeout_s).stream(
                    PROMPTS[i % len(PROMPTS)], chosen, stream=i % 2 == 0))
                if not messages or not messages[-1].final:
                    raise RuntimeError("the request ended without its final response")
                outcome: str | None = None
            except ServerError as exc:
                outcome = "refused" if exc.overloaded else f"{chosen['method']}: ServerError: {exc}"
            except Exception as exc:  # every failure is counted, none stops the soak
                outcome = f"{chosen['method']}: {type(exc).__name__}: {exc}"
            took = time.monotonic() - t0
            with lock:
                if outcome is None:
                    result.latencies_s.append(took)
                elif outcome == "refused":
                    result.refused.append(took)
                else:
                    result.errors.append(outcome)
                    result.hangs += "TimeoutError" in outcome
                result.by_method[chosen["method"]] = result.by_method.get(chosen["method"], 0) + 1

    threads = [threading.Thread(target=client, args=(w,), daemon=True) for w in range(concurrency)]
    for t in threads:
        t.start()
    if processes is not None and rss is not None:
        time.sleep(max(0.0, started + warmup_s - time.monotonic()))
        result.rss_start = {name: rss(pid) for name, pid in processes().items()}
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + timeout_s + 10)
    if processes is not None and rss is not None:
        result.rss_end = {name: rss(pid) for name, pid in processes().items()}
    result.duration_s = time.monotonic() - started
    return result
