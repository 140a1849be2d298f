"""Runs a BuildPlan: preflight, then each step as a subprocess with its output streamed to a log
file, skipping steps whose outputs and fingerprints are already in place (unless force).
"""
from __future__ import annotations

import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

from build_engines.config import Role
from build_engines.errors import BuildError, StepFailedError
from build_engines.manifest import (
    ENGINE_MANIFEST,
    StepOutcome,
    engine_manifest,
    is_up_to_date,
    make_readout,
    source_fingerprint,
    step_fingerprint,
    write_engine_manifest,
    write_record,
)
from build_engines.plan import BuildPlan, EnginePlan, Step
from build_engines.preflight import Preflight, run_preflight
from build_engines.prm_remap import read_head_info

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str], Path], int]  # (argv, log file) -> exit code
HEARTBEAT_S = 60.0


def subprocess_runner(argv: Sequence[str], log_path: Path) -> int:
    """Run argv, appending its merged stdout/stderr to log_path; log a heartbeat while it runs."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    last_line = [""]
    with log_path.open("a", encoding="utf-8") as sink:
        sink.write(f"$ {' '.join(argv)}\n")
        sink.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", bufsize=1)
        done = threading.Event()
        watcher = threading.Thread(target=_heartbeat, args=(done, last_line, log_path), daemon=True)
        watcher.start()
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            sink.flush()
            if line.strip():
                last_line[0] = line.strip()[:200]
        code = proc.wait()
        done.set()
    return code


def _heartbeat(done: threading.Event, last_line: list[str], log_path: Path) -> None:
    start = time.monotonic()
    while not done.wait(HEARTBEAT_S):
        log.info("  ... %.0f s, %s: %s", time.monotonic() - start, log_path.name, last_line[0])


def probe_trtllm_version(python: str) -> str:
    """The installed tensorrt_llm version, read from package metadata (no heavy import)."""
    code = "from importlib.metadata import version; print(version('tensorrt_llm'))"
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {python}: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip():
        raise BuildError("TensorRT-LLM is not installed for " + python + "; build inside "
                         "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3 (see docs/production_gpu.md)")
    return done.stdout.strip().splitlines()[-1]


def _run_step(step: Step, index: int, total: int, runner: Runner, log_dir: Path) -> float:
    log_path = log_dir / f"{step.name}.log"
    log.info("[%d/%d] %s: %s (log: %s)", index, total, step.name, step.tool, log_path)
    if step.clean_output and step.output_dir.exists():
        shutil.rmtree(step.output_dir)
    step.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    code = runner(step.argv, log_path)
    seconds = time.monotonic() - start
    if code != 0:
        raise StepFailedError(step.name, code, str(log_path))
    log.info("[%d/%d] %s done in %.1f s", index, total, step.name, seconds)
    return seconds


def _run_engine(engine: EnginePlan, ctx: _Context) -> list[StepOutcome]:
    upstream = source_fingerprint(engine.spec.model)
    outcomes: list[StepOutcome] = []
    for step in engine.steps:
        ctx.index += 1
        fingerprint = step_fingerprint(step, upstream, ctx.version)
        if not ctx.force and is_up_to_date(step, fingerprint):
            log.info("[%d/%d] %s: up to date, skipped", ctx.index, ctx.total, step.name)
            outcomes.append(StepOutcome(step, fingerprint, True, 0.0))
        else:
            seconds = _run_step(step, ctx.index, ctx.total, ctx.runner, ctx.log_dir)
            write_record(step, fingerprint, ctx.version, seconds)
            outcomes.append(StepOutcome(step, fingerprint, False, seconds))
        upstream = fingerprint
    return outcomes


class _Context:
    """Mutable progress of one execute() call (kept out of module state)."""

    def __init__(self, plan: BuildPlan, runner: Runner, version: str, force: bool) -> None:
        self.runner, self.version, self.force = runner, version, force
        self.log_dir = plan.log_dir
        self.total = len(plan.steps)
        self.index = 0


def _manifest(engine: EnginePlan, plan: BuildPlan, pre: Preflight, version: str,
              outcomes: list[StepOutcome]) -> Path:
    info = pre.models.get(engine.spec.role)
    readout = None
    if engine.spec.prm is not None:
        readout = make_readout(engine, read_head_info(engine.paths.prm_hf), info, pre.separator_token_id)
    manifest = engine_manifest(engine, plan.arch.value, version, outcomes, info, readout)
    return write_engine_manifest(engine, manifest)


def execute(plan: BuildPlan, *, force: bool = False, runner: Runner = subprocess_runner,
            trtllm_version: str | None = None) -> dict[Role, list[StepOutcome]]:
    """Build every engine of the plan. Returns the step outcomes per engine role."""
    pre = run_preflight(plan)
    version = trtllm_version or probe_trtllm_version(plan.toolchain.python)
    log.info("TensorRT-LLM %s, GPU arch %s, %d steps, logs in %s", version, plan.arch.value,
             len(plan.steps), plan.log_dir)
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(plan, runner, version, force)
    results: dict[Role, list[StepOutcome]] = {}
    for engine in plan.engines:
        outcomes = _run_engine(engine, ctx)
        results[engine.spec.role] = outcomes
        manifest_path = engine.paths.engine / ENGINE_MANIFEST
        if any(not o.skipped for o in outcomes) or not manifest_path.exists():
            log.info("%s: manifest %s", engine.spec.role.value, _manifest(engine, plan, pre, version, outcomes))
    return results
