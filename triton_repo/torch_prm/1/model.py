"""The process reward model on the PyTorch engine: token rows and positions in, rewards out.

Parse config, build the engine, then answer each request as its own task on the model's loop
(runtime.in_server.torch_submodels).
"""
from runtime.config import load_config
from runtime.in_server import host
from runtime.in_server.metrics import BufferedFactory, EngineMetrics
from runtime.in_server.torch_submodels import build_prm_submodel


class TritonPythonModel:
    def initialize(self, args):
        params = host.model_parameters(args)
        host.configure_logging()
        cfg = load_config(host.require(params, "pipeline_config"))
        self.model = build_prm_submodel(cfg, int(host.require(params, "cache_requests")),
                                        int(host.require(params, "torch_threads")))
        self.metrics = BufferedFactory(host.PbMetricFactory())
        self.model.counters = EngineMetrics(self.metrics, args["model_name"])
        self.guard = host.Guard(args["model_name"], host.internal_token())
        self.loop = host.StubLoop(args["model_name"])

    def execute(self, requests):
        for request in requests:
            self.loop.spawn(host.answer(host.Incoming.read(request), self.guard, self.model))
        return None

    def finalize(self):
        self.loop.shutdown(grace_s=5.0)
        self.metrics.close()
