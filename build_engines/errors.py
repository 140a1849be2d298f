"""Typed errors of the engine build. All derive from the project's `RsdError` hierarchy."""
from __future__ import annotations

from runtime.core.errors import ConfigError, RsdError

__all__ = [
    "RsdError",
    "ConfigError",
    "BuildError",
    "UnsupportedQuantizationError",
    "GpuDetectionError",
    "ModelFolderError",
    "TokenizerError",
    "TokenizerMismatchError",
    "StepFailedError",
]


class BuildError(RsdError):
    """Base of every engine-build failure that is not a plain configuration error."""


class UnsupportedQuantizationError(ConfigError):
    """A (GPU arch, quantization) or (PRM head, quantization) pair that the plan refuses."""

    def __init__(self, key: str, arch: str, quantization: str, reason: str) -> None:
        super().__init__(key, f"quantization '{quantization}' is not supported on {arch}: {reason}")
        self.arch = arch
        self.quantization = quantization


class GpuDetectionError(BuildError):
    """No GPU could be detected and no --gpu-arch was given, or the GPU is not in the plan table."""


class ModelFolderError(BuildError):
    """A model folder is missing or lacks config.json / weights."""


class TokenizerError(BuildError):
    """A model folder has no tokenizer the build can read."""


class TokenizerMismatchError(BuildError):
    """Draft and target tokenizers differ, so token ids cannot be shared between them."""


class StepFailedError(BuildError):
    """A build step (subprocess) exited with a non-zero status."""

    def __init__(self, step: str, returncode: int, log_path: str) -> None:
        super().__init__(f"step '{step}' failed with exit code {returncode}; see {log_path}")
        self.step = step
        self.returncode = returncode
        self.log_path = log_path
