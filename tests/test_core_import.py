"""The core must import with torch, TensorRT-LLM and Triton absent (STYLE.md layering)."""
from __future__ import annotations

import subprocess
import sys

BLOCKED = ["torch", "tensorrt_llm", "tensorrt", "triton_python_backend_utils", "tritonclient", "transformers"]

SCRIPT = f"""
import sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it now raises ImportError
import runtime.core.loop, runtime.core.methods, runtime.core.sampling, runtime.core.verify
import runtime.core.stats, runtime.core.omega, runtime.core.segment, runtime.pipeline, runtime.config
from runtime.core.methods import METHODS
print(",".join(sorted(METHODS)))
"""


def test_core_imports_without_heavy_libraries() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "bos,cos,draft,gsi,rsd,sd,target".replace("bos", "bon")


def test_blocking_really_blocks() -> None:
    """The harness itself must be able to fail: importing a blocked module raises."""
    script = "import sys; sys.modules['torch'] = None; import runtime.engines.torch.generator"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert out.returncode != 0 and "import of torch halted" in out.stderr
