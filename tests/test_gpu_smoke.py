"""What of scripts/gpu_smoke.sh can be checked without a GPU: shell syntax (and shellcheck when
installed), the dry run's commands, and that its fallback models fit the embedded engine set
(build_engines preflight, PRM head preparation) and give a loadable pipeline config."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import REPO_ROOT, load_config

SCRIPT = REPO_ROOT / "scripts" / "gpu_smoke.sh"


def test_script_syntax_and_shellcheck():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    subprocess.run(["shellcheck", str(SCRIPT)], check=True)


def test_dry_run_prints_the_whole_sequence(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work"),
           "MODELS_ROOT": str(tmp_path / "none"), "HTTP_PORT": "9000"}
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], env=env, check=True, capture_output=True,
                         text=True).stdout
    commands = [line for line in out.splitlines() if line.startswith("+ ")]
    joined = "\n".join(commands)
    assert "pip install --no-deps -e ." in joined
    assert f"-m runtime.smoke_models {tmp_path / 'work' / 'models'}" in joined
    assert "-m build_engines --config configs/engines/embedded.yaml" in joined
    serve = [c for c in commands if "runtime.cli serve" in c]
    assert len(serve) == 2 and serve[0].endswith("--render-only") and serve[1].endswith("&")
    assert "--config configs/triton/trtllm.yaml" in serve[1] and "--grpc-port 9001" in serve[1]
    assert any("runtime.cli client --url 127.0.0.1:9001 --stream" in c for c in commands)
    assert not (tmp_path / "work").exists() and "dry run: nothing was run" in out


@pytest.mark.slow
def test_fallback_models_fit_the_embedded_engine_set(tmp_path):
    from runtime.smoke_models import make_smoke_models, write_pipeline

    models = make_smoke_models(tmp_path / "models")
    pipeline = load_config(write_pipeline(tmp_path / "models", models))
    assert pipeline.prm is not None and pipeline.prm.format == "value_head"
    plan = subprocess.run([sys.executable, "-m", "build_engines", "--config", "configs/engines/embedded.yaml",
                           "--models-root", str(tmp_path / "models"), "--output-root", str(tmp_path / "engines"),
                           "--gpu-arch", "sm90", "--dry-run"], cwd=REPO_ROOT, check=True, capture_output=True,
                          text=True).stdout
    assert "Preflight: model folders, tokenizers and the PRM separator token are OK." in plan
    subprocess.run([sys.executable, "-m", "build_engines.prm_remap", "prepare", "--format", "value_head",
                    "--layout", "vocab_row", "--num-labels", "1", "--src", str(models["prm"]),
                    "--dst", str(tmp_path / "prm_hf")], cwd=REPO_ROOT, check=True, capture_output=True)
    config = (tmp_path / "models" / "target" / "config.json").read_text()
    assert '"max_position_embeddings": 1024' in config and '"num_attention_heads": 4' in config
    assert Path(tmp_path / "prm_hf" / "rsd_prm_head.json").is_file()
