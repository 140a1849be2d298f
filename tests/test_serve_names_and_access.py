"""`rsd serve` (the real CLI) as users' own tools meet it.

1. `--model-name ensemble --model-name tensorrt_llm_bls` on loopback: requests shaped exactly as
   TensorRT-LLM's `end_to_end_grpc_client.py` shapes them (tensorrtllm_backend v0.19.0
   inflight_batcher_llm/client/end_to_end_grpc_client.py prepare_inputs, run_inference: read, not
   copied) reach both names, and the responses have the shapes the script indexes: text_output a
   flat array (`output[0].decode("utf-8")`, as the real BLS's postprocessing model returns it:
   all_models/inflight_batcher_llm/postprocessing/1/model.py builds np.array of bytes), batch_index
   and the ten perf outputs [1, 1] (`[0][0]`); `tritonclient.get_model_config` answers with no
   header; the metrics of each name carry it (served_model); /ready and /live on the health port.
2. `--address 0.0.0.0 --api-key KEY`: the read-only APIs need the admin key beyond loopback;
   inference needs `authorization: Bearer KEY` on HTTP and gRPC (the BLS's own sub-requests carry
   it, so requests still run); the OpenAI front answers 401 in OpenAI's error shape without it and
   serves the official SDK with it; health and metrics stay open.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from test_trtllm_clients import PERF, Failed, end_to_end_inputs, grpc_stream

from runtime.clients.client import RsdClient, ServerError
from runtime.config import REPO_ROOT
from runtime.deploy.server import free_ports

pytestmark = [pytest.mark.server, pytest.mark.slow]

KEY, ADMIN = "sk-test-inference-key", "test-admin-key"


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], ports: list[int], log: Path) -> None:
        self.proc, self.log = proc, log
        self.http, self.grpc, self.metrics, self.openai, self.health = ports
        self.grpc_url, self.http_url = f"127.0.0.1:{self.grpc}", f"127.0.0.1:{self.http}"


def _serve(pipeline: Path, root: Path, *flags: str) -> Served:
    ports = free_ports(5)
    names = ("--http-port", "--grpc-port", "--metrics-port", "--openai-port", "--health-port")
    cmd = [sys.executable, "-m", "runtime.cli", "serve", "--pipeline", str(pipeline), "--repo", str(root / "repo"),
           "--log-file", str(root / "tritonserver.log"), "--grace-s", "5", *flags,
           *(arg for name, port in zip(names, ports) for arg in (name, str(port)))]
    log = root / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while b"serving:" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.2)
    return Served(proc, ports, log)


def _stop(served: Served) -> None:
    served.proc.terminate()
    assert served.proc.wait(90) == 0


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(scope="module")
def named(pipeline_config, tmp_path_factory):
    served = _serve(pipeline_config, tmp_path_factory.mktemp("named"), "--model-name", "ensemble",
                    "--model-name", "tensorrt_llm_bls")
    try:
        yield served
    finally:
        _stop(served)


@pytest.mark.parametrize("model", ["ensemble", "tensorrt_llm_bls"])
def test_end_to_end_client_shaped_requests_reach_both_names(named, model):
    plain = grpc_stream(named, end_to_end_inputs("what is 7-2?", 16), model=model)
    (whole,) = plain
    assert whole["text_output"].shape == (1,) and whole["text_output"][0].decode("utf-8").startswith("what is 7-2?")
    streamed = grpc_stream(named, end_to_end_inputs("what is 7-2?", 16, stream=True, exclude_input_in_output=True),
                           model=model)
    assert len(streamed) >= 1 and all(r["text_output"].shape == (1,) for r in streamed)
    assert whole["text_output"][0].decode() == "what is 7-2?" + "".join(r["text_output"][0].decode() for r in streamed)
    perf = grpc_stream(named, end_to_end_inputs("what is 7-2?", 16, return_perf_metrics=True, return_log_probs=True),
                       ("text_output", "cum_log_probs", "output_log_probs", "batch_index", *PERF), model=model)
    for name in ("batch_index", *PERF):
        assert perf[-1][name].shape == (1, 1), name  # the script reads result.as_numpy(name)[0][0]
    batch = {k: np.concatenate([v, v]) for k, v in end_to_end_inputs("what is 7-2?", 12).items()}  # --batch-inputs
    rows = grpc_stream(named, batch, ("text_output", "batch_index"), model=model)
    assert sorted(int(r["batch_index"][0][0]) for r in rows) == [0, 1]
    with pytest.raises(Failed, match="beam_width"):  # -b 2: refused by name
        grpc_stream(named, end_to_end_inputs("what is 7-2?", 8, beam_width=2), model=model)


def test_tools_read_the_config_and_each_name_has_its_metrics(named):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(named.grpc_url)
    assert client.get_model_config("ensemble").config.name == "ensemble"  # no header: open on loopback
    RsdClient(named.grpc_url, "grpc", model="tensorrt_llm_bls", timeout_s=60).generate("1+1=", {"max_tokens": 4})
    time.sleep(0.6)  # two metric flushes
    text = _get(f"http://127.0.0.1:{named.metrics}/metrics")[1]
    served = set(re.findall(r'rsd_requests_total\{[^}]*served_model="([^"]+)"', text))
    assert {"ensemble", "tensorrt_llm_bls"} <= served
    assert 'nv_inference_request_success{model="tensorrt_llm_bls"' in text
    assert _get(f"http://127.0.0.1:{named.health}/ready")[0] == 200
    assert _get(f"http://127.0.0.1:{named.health}/live")[0] == 200
    assert _get(f"http://127.0.0.1:{named.openai}/v1/models")[0] == 200  # the front serves the first name


def test_an_api_key_guards_inference_and_beyond_loopback_the_read_apis(pipeline_config, tmp_path):
    import openai
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from runtime.deploy.server import GRPC_ADMIN_HEADER

    served = _serve(pipeline_config, tmp_path, "--address", "0.0.0.0", "--api-key", KEY, "--admin-key", ADMIN)
    try:
        assert "without --api-key" not in served.log.read_text()
        client = grpcclient.InferenceServerClient(served.grpc_url)
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_model_config("rsd")  # beyond loopback: the admin key
        assert client.get_model_config("rsd", headers={GRPC_ADMIN_HEADER: ADMIN}).config.name == "rsd"
        body = json.dumps({"text_input": "1+1=", "max_tokens": 4}).encode()
        generate = f"http://{served.http_url}/v2/models/rsd/generate"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(generate, data=body), timeout=30)
        assert refused.value.code == 403
        ok = urllib.request.urlopen(urllib.request.Request(generate, data=body,
                                                           headers={"Authorization": f"Bearer {KEY}"}), timeout=60)
        assert ok.status == 200 and "text_output" in json.loads(ok.read())
        with pytest.raises(ServerError, match="restricted"):
            RsdClient(served.grpc_url, "grpc", timeout_s=60).generate("1+1=", {"max_tokens": 4})
        assert RsdClient(served.grpc_url, "grpc", timeout_s=60, api_key=KEY).generate(
            "1+1=", {"max_tokens": 4, "method": "rsd"}).final  # the BLS's sub-requests carry the key too
        base = f"http://127.0.0.1:{served.openai}/v1"
        with pytest.raises(openai.AuthenticationError) as denied:
            openai.OpenAI(base_url=base, api_key="wrong").completions.create(model="rsd", prompt="1+1=", max_tokens=4)
        assert denied.value.status_code == 401 and denied.value.body["code"] == "invalid_api_key"
        done = openai.OpenAI(base_url=base, api_key=KEY).completions.create(model="rsd", prompt="1+1=", max_tokens=4)
        assert done.choices[0].text is not None
        for url in (f"http://127.0.0.1:{served.health}/ready", f"http://127.0.0.1:{served.openai}/health",
                    f"http://127.0.0.1:{served.metrics}/metrics", f"http://{served.http_url}/v2/health/ready"):
            assert _get(url)[0] == 200, url  # probes and scrapes stay open
    finally:
        _stop(served)


def test_beyond_loopback_without_a_key_rsd_serve_says_so(pipeline_config, tmp_path):
    """One warning line at start; --open-read-apis opens model config beyond loopback."""
    import tritonclient.grpc as grpcclient

    served = _serve(pipeline_config, tmp_path, "--address", "0.0.0.0", "--open-read-apis")
    try:
        assert served.log.read_text().count("without --api-key: anyone who reaches these ports can run inference") == 1
        assert grpcclient.InferenceServerClient(served.grpc_url).get_model_config("rsd").config.name == "rsd"
    finally:
        _stop(served)
