"""GPU architecture detection through nvidia-smi (no CUDA libraries needed)."""
from __future__ import annotations

import logging
import shutil
import subprocess
from typing import Callable

from build_engines.config import GpuArch
from build_engines.errors import GpuDetectionError

log = logging.getLogger(__name__)

QUERY = ("nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader")
Query = Callable[[], str]


def _run_nvidia_smi() -> str:
    if shutil.which(QUERY[0]) is None:
        raise GpuDetectionError("no GPU found: nvidia-smi is not on PATH; pass --gpu-arch sm90|sm89|sm80|sm86 "
                                "to plan for a GPU you do not have here")
    try:
        done = subprocess.run(QUERY, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GpuDetectionError(f"nvidia-smi failed ({exc}); pass --gpu-arch explicitly") from exc
    if done.returncode != 0:
        raise GpuDetectionError(f"nvidia-smi failed: {done.stderr.strip() or done.stdout.strip()}; "
                                "pass --gpu-arch explicitly")
    return done.stdout


def arch_from_compute_cap(cap: str) -> GpuArch:
    """'9.0' -> sm90. Raises GpuDetectionError for GPUs outside the plan table."""
    text = cap.strip()
    try:
        major, minor = (int(part) for part in text.split("."))
    except ValueError:
        raise GpuDetectionError(f"cannot parse compute capability {text!r}") from None
    name = f"sm{major}{minor}"
    try:
        return GpuArch(name)
    except ValueError:
        known = ", ".join(a.value for a in GpuArch)
        raise GpuDetectionError(f"GPU arch {name} (compute capability {text}) is not in the build plan "
                                f"({known}); pass --gpu-arch to build for one of those") from None


def detect_gpu_arch(query: Query = _run_nvidia_smi) -> GpuArch:
    """The arch of the visible GPUs; all must agree because one engine set serves all of them."""
    lines = [line for line in query().splitlines() if line.strip()]
    if not lines:
        raise GpuDetectionError("no GPU found by nvidia-smi; pass --gpu-arch sm90|sm89|sm80|sm86")
    archs = {arch_from_compute_cap(line) for line in lines}
    if len(archs) > 1:
        raise GpuDetectionError(f"mixed GPU archs {sorted(a.value for a in archs)}: engines are arch-specific; "
                                "restrict CUDA_VISIBLE_DEVICES or pass --gpu-arch")
    arch = archs.pop()
    log.info("detected %d GPU(s) of arch %s", len(lines), arch.value)
    return arch
