"""Test-only: a fake TensorRT-LLM engine as a Triton Python model (tests/support/fake_trtllm.py).

Tests render the real `trtllm` layout, then copy this file into each `tensorrt_llm` model and
switch its backend to python (tests/support/fake_trtllm_repo.py), so the fake sees exactly the
rendered config: its inputs, outputs and parameters. Sends n sequences as n responses.
"""
import triton_python_backend_utils as pb_utils

from runtime.core.errors import EngineError
from runtime.in_server import host
from tests.support.fake_trtllm import FakeEngine


class TritonPythonModel:
    def initialize(self, args):
        host.configure_logging()
        self.engine = FakeEngine.load(host.model_parameters(args))

    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            try:
                responses = self.engine.respond(host.read_inputs(request))
            except EngineError as exc:
                sender.send(pb_utils.InferenceResponse(error=host.to_triton_error(exc)), flags=final)
                continue
            wanted = set(request.requested_output_names())
            for i, outputs in enumerate(responses):
                tensors = host.to_tensors({k: v for k, v in outputs.items() if k in wanted})
                sender.send(pb_utils.InferenceResponse(output_tensors=tensors),
                            flags=final if i == len(responses) - 1 else 0)
        return None
