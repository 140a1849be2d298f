"""The `rsd` BLS: reward-guided speculative decoding over the draft, target and PRM sub-models.

Parse config, build the pipeline (the same step loop as in-process, on engines that call the
sub-models), then serve each request as its own task: validate, run, respond (runtime.serving.bls).
"""
from runtime.config import load_config
from runtime.engines.triton.factory import SubModels, build_bls_pipeline
from runtime.serving import host
from runtime.serving.bls import RsdService
from runtime.serving.metrics import RsdMetrics


class TritonPythonModel:
    def initialize(self, args):
        params = host.model_parameters(args)
        host.configure_logging()
        transport = host.PbTransport(float(host.require(params, "sub_request_timeout_s")),
                                     int(host.require(params, "bls_threads")))
        names = SubModels(params["draft_model"], params["target_model"], params["prm_model"],
                          host.require(params, "submodel_backend"), int(host.require(params, "max_draft_len")))
        pipeline = build_bls_pipeline(load_config(host.require(params, "pipeline_config")), transport, names)
        self.service = RsdService(pipeline, RsdMetrics(host.PbMetricFactory()))
        self.background = host.Background()

    async def execute(self, requests):
        for request in requests:
            sink = host.PbSink(request.get_response_sender())
            self.background.spawn(self.service.serve(host.read_inputs(request), sink))
        return None
