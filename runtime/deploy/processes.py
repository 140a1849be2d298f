"""The processes of a served model repository, read from /proc, and how they die with `rsd serve`.

`rsd serve` is the parent of tritonserver and of the OpenAI front; tritonserver is the parent of
one Python-backend stub per model instance. `kill -9` of `rsd serve` (what an OOM killer or a
container runtime does) must leave none of them behind, or the old server keeps answering on the
ports and a restarted `rsd serve` cannot bind them:
- its children get PR_SET_PDEATHSIG (`die_with_parent`): the kernel signals them when it dies;
- a stub outlives a killed tritonserver (measured: still running 30 s after), so each stub
  watches its own parent (runtime.in_server.host.exit_with_parent): a thread exits it, and a `sh`
  loop beside it kills it when that thread cannot run (the stub's main thread, waiting on the dead
  server, can hold the GIL forever);
- shared-memory regions of servers whose `rsd serve` died are removed at the next start
  (`remove_stale_shm`); their names carry that process's pid.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
SHM_PREFIX = "rsd"  # regions are named rsd<pid of rsd serve>x<nonce>_...
_STALE = re.compile(rf"{SHM_PREFIX}(\d+)x\d+_")


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A Popen `preexec_fn`: the child gets `sig` when the thread that started it dies (start it
    from a thread that lives as long as the parent: the main thread, or the supervisor's)."""
    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(111)  # never run a child that would outlive us unnoticed
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(112)
    return arm


def stub_processes(pid: int) -> dict[int, str]:
    """The Python-backend stubs below process `pid` (any depth): stub pid -> model name."""
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            argv = _cmdline(child)
            if argv and argv[0].endswith("triton_python_backend_stub") and len(argv) > 1:
                found[child] = Path(argv[1]).parent.parent.name  # <repo>/<model>/<version>/model.py
            else:
                todo.append(child)
    return found


def expected_stubs(repo: Path) -> dict[str, int]:
    """Model -> the stubs it runs: one per instance of each Python-backend model of the repository."""
    out: dict[str, int] = {}
    for config in sorted(repo.glob("*/config.pbtxt")):
        text = config.read_text()
        if not re.search(r'backend:\s*"python"', text):
            continue
        counts = [int(c) for c in re.findall(r"instance_group\s*\[\s*\{\s*count:\s*(\d+)", text)]
        out[config.parent.name] = sum(counts) or 1
    return out


def process_alive(pid: int) -> bool:
    """Running (a zombie, which its parent has not reaped yet, is dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def remove_stale_shm(shm: Path = Path("/dev/shm")) -> list[Path]:
    """Remove the python-backend regions of servers whose `rsd serve` is gone (killed with -9)."""
    removed = []
    for region in shm.glob(f"{SHM_PREFIX}*x*_*"):
        match = _STALE.match(region.name)
        if match and not process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                region.unlink()
                removed.append(region)
    if removed:
        log.warning("removed %d shared-memory region(s) left by a server that was killed", len(removed))
    return removed


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            kids += [int(c) for c in (task / "children").read_text().split()]
    return kids


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []
