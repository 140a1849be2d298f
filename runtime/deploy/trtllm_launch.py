"""How tritonserver starts for the `trtllm` layout: TensorRT-LLM's orchestrator mode.

Several `tensorrtllm` models in one server (draft, target, prm_engine) need orchestrator mode,
set up as TensorRT-LLM's scripts/launch_triton_server.py --multi-model does it:
- TRTLLM_ORCHESTRATOR=1 and TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES=1: each model's executor runs in
  worker processes it spawns (trtllmExecutorWorker) on the model's gpu_device_ids, one per
  tensor-parallel rank;
- tritonserver under `mpirun --allow-run-as-root -n 1` (the workers are spawned through MPI);
- no pinned or CUDA memory pools and no peer access in the server process, which then keeps no
  GPU memory of its own (only the workers touch the GPUs);
- --disable-auto-complete-config.
Docker adds the ulimits NVIDIA's recipes use (memlock unlimited, 64 MiB stack).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from runtime.config import PipelineConfig
from runtime.deploy.config import ServeConfig

MPI_LAUNCHER = ("mpirun", "--allow-run-as-root", "-n", "1")
ORCHESTRATOR_ENV = (("TRTLLM_ORCHESTRATOR", "1"), ("TRTLLM_ORCHESTRATOR_SPAWN_PROCESSES", "1"))
DOCKER_ARGS = ("--ulimit", "memlock=-1", "--ulimit", "stack=67108864")
READY_TIMEOUT_S = 900.0  # engines load in minutes, not seconds


@dataclass(frozen=True, slots=True)
class Launch:
    """What a backend adds to the plain tritonserver command."""

    launcher: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    args: tuple[str, ...] = ()
    docker_args: tuple[str, ...] = ()
    ready_timeout_s: float = 180.0


def launch_for(cfg: ServeConfig) -> Launch:
    if cfg.backend != "trtllm":
        return Launch()
    assert cfg.trtllm is not None, "ServeConfig requires the trtllm section for backend trtllm"
    pools = tuple(f"--cuda-memory-pool-byte-size={gpu}:0" for gpu in cfg.trtllm.gpu_ids())
    args = ("--pinned-memory-pool-byte-size=0", "--enable-peer-access=false", *pools, "--disable-auto-complete-config")
    return Launch(MPI_LAUNCHER, ORCHESTRATOR_ENV, args, DOCKER_ARGS, READY_TIMEOUT_S)


def mounted_paths(cfg: ServeConfig, pipeline: PipelineConfig) -> list[Path]:
    """Folders the rendered repository names: the pipeline config's, the model folders
    (tokenizers), and for trtllm the engine folders."""
    paths = [cfg.pipeline.parent] + [m.path for m in (pipeline.draft, pipeline.target, pipeline.prm) if m and m.path]
    if cfg.trtllm is not None:
        # no PRM engine: the torch PRM beside the engines, or a confidence PRM (no model at all)
        no_prm_engine = pipeline.prm is not None and (
            pipeline.prm.format == "confidence" or (cfg.trtllm.prm == "torch" and pipeline.prm.format != "likelihood"))
        paths += [cfg.trtllm.engine_dir(e.role) for e in cfg.trtllm.engines
                  if getattr(pipeline, e.role, None) is not None and not (e.role == "prm" and no_prm_engine)]
    return paths


def container_image(cfg: ServeConfig, default: str) -> str:
    return cfg.trtllm.image if cfg.trtllm is not None else default
