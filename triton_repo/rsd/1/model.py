"""The `rsd` BLS: reward-guided speculative decoding over the draft, target and PRM sub-models.

Parse config, build the pipeline (the same step loop as in-process, on engines that call the
sub-models), then serve each request as its own task on the model's loop: validate, run,
respond (runtime.in_server.bls). `execute` only admits requests (it blocks while the BLS runs
its capacity of rows, so Triton's bounded queue holds the rest: runtime.in_server.admission)
and hands them over.
"""
import time

from runtime.assembly.bls import SubModels, build_bls_pipeline, parse_engines
from runtime.config import load_config
from runtime.in_server import host
from runtime.in_server.admission import Admission
from runtime.in_server.bls import RsdService, abort_flag, drain_flag
from runtime.in_server.metrics import BufferedFactory, RsdMetrics


class TritonPythonModel:
    def initialize(self, args):
        params = host.model_parameters(args)
        host.configure_logging()
        self.loop = host.StubLoop(args["model_name"], int(host.require(params, "bls_threads")))
        backend = host.require(params, "submodel_backend")
        self.metrics = BufferedFactory(host.PbMetricFactory())
        metrics = RsdMetrics(self.metrics, args["model_name"])
        timeout_s = float(host.require(params, "sub_request_timeout_s"))
        self.transport = transport = host.submodel_transport(timeout_s, host.internal_token(), backend == "trtllm",
                                                             metrics.observe_submodel_call)
        names = SubModels(params["draft_model"], params["target_model"], params["prm_model"],
                          backend, int(host.require(params, "max_draft_len")),
                          parse_engines(params.get("trtllm_engines", "")))
        pipeline = build_bls_pipeline(load_config(host.require(params, "pipeline_config")), transport, names)
        admission = Admission(int(host.require(params, "max_running_rows")),
                              float(host.require(params, "queue_timeout_s")))
        self.service = RsdService(pipeline, metrics, int(host.require(params, "max_prompt_bytes")), drain_flag(),
                                  admission, abort_flag())

    def execute(self, requests):
        deadline = time.monotonic() + self.service.admission.max_wait_s
        for request in requests:
            self.service.submit(host.read_inputs(request), host.read_parameters(request),
                                host.PbSink(request.get_response_sender()), self.loop.spawn, deadline)
        return None

    def finalize(self):
        # `rsd serve` drained the server before stopping it; what still runs here gets an error.
        close = getattr(self.transport, "close", None)
        self.loop.shutdown(grace_s=5.0, closing=close() if close is not None else None)
        self.metrics.close()
