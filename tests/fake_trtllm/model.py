"""Test-only: a fake TensorRT-LLM engine as a Triton Python model (tests/support/fake_trtllm.py).

Tests render the real `trtllm` layout, then copy this file into each `tensorrt_llm` model and
switch its backend to python (tests/support/fake_trtllm_repo.py), so the fake sees exactly the
rendered config: its inputs, outputs and parameters. A parameter the real backend requires that
the config lacks fails the load; an output the real backend would emit that the config does not
declare fails the response, as Triton core fails it (tests/support/trtllm_rules.py), though the
Python backend would silently drop it. Sends n sequences as n responses.
"""
import json

import triton_python_backend_utils as pb_utils

from runtime.core.errors import RsdError
from runtime.in_server import host
from tests.support import trtllm_rules
from tests.support.fake_trtllm import FakeEngine


class TritonPythonModel:
    def initialize(self, args):
        host.configure_logging()
        self.name = args["model_name"]
        self.declared = frozenset(o["name"] for o in json.loads(args["model_config"]).get("output", []))
        self.engine = FakeEngine.load(host.model_parameters(args))

    def execute(self, requests):
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        for request in requests:
            sender = request.get_response_sender()
            requested = frozenset(request.requested_output_names())
            try:
                responses = self.engine.respond(host.read_inputs(request), requested)
                for outputs in responses:
                    trtllm_rules.check_outputs(outputs, requested, self.declared, self.name)
            except RsdError as exc:
                sender.send(pb_utils.InferenceResponse(error=host.to_triton_error(exc)), flags=final)
                continue
            for i, outputs in enumerate(responses):
                tensors = host.to_tensors({k: v for k, v in outputs.items() if k in requested})
                sender.send(pb_utils.InferenceResponse(output_tensors=tensors),
                            flags=final if i == len(responses) - 1 else 0)
        return None
