"""The process reward model on a TensorRT-LLM engine, behind the torch_prm contract.

Parse config, read the engine manifest's reward rule, then answer each request as its own task
on the model's loop (runtime.in_server.engine_prm): one context-logits request per row to the PRM engine.
"""
from runtime.in_server import host
from runtime.in_server.engine_prm import build_engine_prm


class TritonPythonModel:
    def initialize(self, args):
        params = host.model_parameters(args)
        host.configure_logging()
        token = host.internal_token()
        self.loop = host.StubLoop(args["model_name"], int(host.require(params, "bls_threads")))
        transport = host.submodel_transport(float(host.require(params, "sub_request_timeout_s")), token,
                                            multi_response=True)
        self.model = build_engine_prm(transport, host.require(params, "engine_model"),
                                      host.require(params, "engine_manifest"))
        self.guard = host.Guard(args["model_name"], token)

    def execute(self, requests):
        for request in requests:
            self.loop.spawn(host.answer(host.Incoming.read(request), self.guard, self.model))
        return None

    def finalize(self):
        self.loop.shutdown(grace_s=5.0)
