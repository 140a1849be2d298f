"""perf_analyzer 2.51.0 runs by its own name from the venv (scripts/setup.sh sets its RPATH), and
measures the `rsd` model of the real tritonserver over gRPC streaming with no header (it reads the
model config and metadata, open on loopback), both as a user runs it and exactly as genai-perf
drives it (genai-perf 0.0.16, perf_analyzer repo 263c5f6e: genai_perf/config/generate/
perf_analyzer_config.py _add_protocol_args, inputs/converters/tensorrtllm_converter.py: -i grpc
--streaming, --shape max_tokens:1 --shape text_input:1, and text_input / max_tokens /
exclude_input_in_output / stream rows). genai-perf itself needs numpy 2, which the Triton 24.10
python backend stub cannot take, so it is not installed here: scripts/bench_genai_perf.sh runs it
from a venv of its own."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def perf_analyzer() -> str:
    found = shutil.which("perf_analyzer", path=str(VENV_BIN))
    if found is None:
        pytest.skip(f"no perf_analyzer in {VENV_BIN} (the serve extra is not installed)")
    return found


def clean_env() -> dict[str, str]:
    """No LD_LIBRARY_PATH: the binary must find its libraries by itself."""
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    return env


def test_perf_analyzer_runs_by_its_own_name():
    perf_analyzer()
    out = subprocess.run(["perf_analyzer", "--version"], env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "Perf Analyzer Version 2.51.0" in out.stdout + out.stderr


GENAI_PERF_ROWS = [{"text_input": [p], "max_tokens": [8], "exclude_input_in_output": [True], "stream": [True]}
                   for p in ("1+1=", "2*3=")]
USER_ROWS = [{"text_input": [p], "stream": [False], "max_tokens": [8]} for p in ("1+1=", "2*3=")]


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.parametrize(("rows", "extra"), [(USER_ROWS, []),
                                             (GENAI_PERF_ROWS, ["--shape", "max_tokens:1", "--shape", "text_input:1",
                                                                "--service-kind", "triton"])],
                         ids=["by-hand", "as-genai-perf"])
def test_perf_analyzer_measures_the_rsd_model(triton_server, tmp_path, rows, extra):
    perf_analyzer()
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"data": rows}))
    cmd = ["perf_analyzer", "-m", "rsd", "-u", triton_server.grpc_url, "-i", "grpc", "--streaming", *extra,
           "--input-data", str(data), "--concurrency-range", "1", "--measurement-mode", "count_windows",
           "--measurement-request-count", "2", "--max-trials", "3", "-s", "999", "-f", str(tmp_path / "pa.csv")]
    out = subprocess.run(cmd, env=clean_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    header_row, values = (tmp_path / "pa.csv").read_text().splitlines()[:2]
    throughput = float(dict(zip(header_row.split(","), values.split(",")))["Inferences/Second"])
    assert throughput > 0
