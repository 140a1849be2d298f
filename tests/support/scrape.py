"""Read a server's /metrics once its metrics have settled.

The models apply their metric operations every 0.25 s (runtime.in_server.metrics.BufferedFactory),
so what a finished request moved shows up to one interval later: scrape until two scrapes a
flush interval apart agree (the server is otherwise idle in these tests)."""
from __future__ import annotations

import time
import urllib.request

FLUSH_S = 0.25


def metrics_text(url: str, timeout_s: float = 15.0) -> str:
    def once() -> str:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return str(resp.read().decode())

    deadline = time.monotonic() + timeout_s
    text = once()
    while time.monotonic() < deadline:
        time.sleep(FLUSH_S * 1.5)
        again = once()
        if again == text:
            break
        text = again
    return text
