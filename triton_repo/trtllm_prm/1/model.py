"""The process reward model on a TensorRT-LLM engine, behind the torch_prm contract.

Parse config, read the engine manifest's reward rule, then answer each request as its own task
(runtime.serving.engine_prm): one context-logits request per row to the PRM engine.
"""
from runtime.serving import host
from runtime.serving.engine_prm import build_engine_prm


class TritonPythonModel:
    def initialize(self, args):
        params = host.model_parameters(args)
        host.configure_logging()
        transport = host.PbTransport(float(host.require(params, "sub_request_timeout_s")),
                                     int(host.require(params, "bls_threads")))
        self.model = build_engine_prm(transport, host.require(params, "engine_model"),
                                      host.require(params, "engine_manifest"))
        self.background = host.Background()

    async def execute(self, requests):
        for request in requests:
            self.background.spawn(host.answer(request, self.model.handle))
        return None
