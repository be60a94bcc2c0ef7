"""Offline validation of the deployment files in ``deploy/``.

Each file is checked by the tool its ecosystem uses (the compose specification's JSON schema, a
Kubernetes schema validator, ``systemd-analyze verify``, ``promtool``), then for the properties the
operations rely on: Redis with AOF and ``noeviction``, workers given longer to stop than a run may
take, one GPU per ComfyUI, and only the metric names the code exports. promtool and systemd-analyze
come from Debian's ``prometheus`` and ``systemd`` packages (``make test-tools``): their tests are
skipped only where they are missing and cannot be installed (not root).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dispatcher.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "comfy-dispatch.json"
DASHBOARD_UID = "comfy-dispatch"

# The oldest Kubernetes the manifests support: native sidecars (restartable init containers) are on by
# default from 1.29; the preStop sleep action from 1.30.
K8S_VERSION = "1.31.0"

# The default run time limit: every graceful stop of a worker must outlast it.
RUN_TIMEOUT = load_settings({}).run_timeout

# The metric names the code exports (the metrics specification); dashboards, alerts and KEDA use no other.
COUNTERS = {
    "comfy_dispatch_runs_submitted_total",
    "comfy_dispatch_runs_rejected_total",
    "comfy_dispatch_runs_completed_total",
    "comfy_dispatch_run_retries_total",
    "comfy_dispatch_runs_dispatched_total",
    "comfy_dispatch_webhook_deliveries_total",
    "comfy_dispatch_output_bytes_total",
    "comfy_dispatch_gpu_seconds_total",
    "comfy_dispatch_model_switches_total",
    "comfy_dispatch_runs_routed_total",
}
HISTOGRAMS = {
    "comfy_dispatch_queue_wait_seconds",
    "comfy_dispatch_comfyui_execution_seconds",
    "comfy_dispatch_output_upload_seconds",
    "comfy_dispatch_run_duration_seconds",
}
GAUGES = {
    "comfy_dispatch_queue_depth",
    "comfy_dispatch_runs_waiting_for_capability",
    "comfy_dispatch_queue_oldest_age_seconds",
    "comfy_dispatch_runs_in_flight",
    "comfy_dispatch_dead_letter_runs",
    "comfy_dispatch_workers",
    "comfy_dispatch_comfyui_up",
    "comfy_dispatch_admission_bucket_level",
    "comfy_dispatch_dispatch_bucket_level",
    "comfy_dispatch_webhook_backlog",
    "comfy_dispatch_ready_slots",
    "comfy_dispatch_worker_comfyui_up",
    "comfy_dispatch_worker_busy",
    "comfy_dispatch_worker_runs_held",
}
METRIC_NAMES = COUNTERS | HISTOGRAMS | GAUGES
# Read from Redis by every API replica alike: summed across replicas they would count everything twice.
API_GAUGES = GAUGES - {
    "comfy_dispatch_worker_comfyui_up",
    "comfy_dispatch_worker_busy",
    "comfy_dispatch_worker_runs_held",
}

METRIC_RE = re.compile(r"\bcomfy_dispatch_[a-z0-9_]+")


def metric_names(text: str) -> set[str]:
    """Metric names used in PromQL ``text``, histogram series (``_bucket``, ``_sum``, ``_count``) by their base."""
    names = set()
    for name in METRIC_RE.findall(text):
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def undeduplicated_api_gauges(expr: str) -> list[str]:
    """API gauges in ``expr`` whose nearest enclosing aggregation is not max (or count, absent: presence)."""
    bad = []
    for match in METRIC_RE.finditer(expr):
        if match.group() in API_GAUGES:
            aggregations = re.findall(r"\b(sum|max|min|avg|count|absent)\b", expr[: match.start()])
            if not aggregations or aggregations[-1] not in ("max", "count", "absent"):
                bad.append(match.group())
    return bad


@pytest.mark.parametrize(
    ("expr", "bad"),
    [
        ("sum(max by (priority) (comfy_dispatch_queue_depth))", []),
        ("max(delta(comfy_dispatch_dead_letter_runs[30m])) > 0", []),
        ("sum(comfy_dispatch_queue_depth)", ["comfy_dispatch_queue_depth"]),
        ("comfy_dispatch_comfyui_up == 0", ["comfy_dispatch_comfyui_up"]),
        ("sum(rate(comfy_dispatch_runs_completed_total[5m]))", []),
    ],
)
def test_undeduplicated_api_gauges(expr: str, bad: list[str]) -> None:
    assert undeduplicated_api_gauges(expr) == bad


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def require_tool(name: str, package: str) -> str:
    """The tool's path; skips only where it is missing and cannot be installed here."""
    path = shutil.which(name)
    if path:
        return path
    if os.geteuid() == 0:
        pytest.fail(f"{name} is missing: `make test-tools` installs it (Debian package {package})")
    pytest.skip(f"{name} is missing and installing Debian's {package} needs root (make test-tools)")


def run(
    args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


# --- docker compose ------------------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    ref = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema: dict[str, Any] = json.loads(ref.read_text())
    return schema


def compose_errors(document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yml")
    return document


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def test_compose_schema_check_catches_a_misspelled_key(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["restrat"] = "always"
    assert any("restrat" in error for error in compose_errors(broken))


def test_compose_redis_keeps_every_accepted_run(compose: dict[str, Any]) -> None:
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_compose_pairs_each_worker_with_its_own_gpu_and_comfyui(compose: dict[str, Any]) -> None:
    services = compose["services"]
    workers = sorted(name for name in services if name.startswith("worker-"))
    assert workers, "no worker service"
    device_ids = []
    for name in workers:
        worker = services[name]
        comfyui_name = name.replace("worker-", "comfyui-")
        comfyui = services[comfyui_name]
        # The worker reaches its ComfyUI on loopback, inside the ComfyUI's network namespace only.
        assert worker["network_mode"] == f"service:{comfyui_name}"
        assert "http://127.0.0.1:8188" in worker["command"]
        assert "127.0.0.1" in comfyui["command"]
        assert "ports" not in comfyui
        (device,) = comfyui["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
        device_ids.extend(device["device_ids"])
        assert duration_seconds(worker["stop_grace_period"]) > RUN_TIMEOUT
    assert len(set(device_ids)) == len(device_ids), "two workers share a GPU"


def test_compose_mounts_files_that_exist(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and "${" not in source:
                assert (DEPLOY / source).exists(), source
    for service in ("prometheus", "grafana"):
        assert service in compose["services"]


def duration_seconds(value: str) -> float:
    """A compose duration (``3900s``, ``65m``, ``1h5m``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    parts = re.findall(r"(\d+)([hms])", value)
    assert "".join(n + u for n, u in parts) == value, value
    return sum(int(n) * units[u] for n, u in parts)


# --- Kubernetes --------------------------------------------------------------------------------------

# The validator knows only Kubernetes' own kinds; these two CRDs are checked against the fields we use.
SCALED_OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {"name": {"type": "string"}, "kind": {"type": "string"}},
                },
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "advanced": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "properties": {
                            "type": {"const": "prometheus"},
                            "metadata": {
                                "type": "object",
                                "required": ["serverAddress", "query", "threshold"],
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "minProperties": 1},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                        },
                    },
                },
            },
        },
    },
}
CRD_SCHEMAS = {("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT_SCHEMA}
CRD_SCHEMAS[("monitoring.coreos.com/v1", "ServiceMonitor")] = SERVICE_MONITOR_SCHEMA


def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(K8S / "kustomization.yaml")
    return document


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    """Every resource the kustomization lists, in order (its own namespace and labels not applied)."""
    return [doc for name in kustomization()["resources"] for doc in load_all_yaml(K8S / name)]


def find(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def validate_manifest(manifest: dict[str, Any]) -> None:
    crd_schema = CRD_SCHEMAS.get((manifest["apiVersion"], manifest["kind"]))
    if crd_schema is not None:
        jsonschema.Draft202012Validator(crd_schema).validate(manifest)
    else:
        # strict: unknown fields are errors too, so a misspelled or misplaced field is caught.
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_file() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


def test_every_manifest_validates(manifests: list[dict[str, Any]]) -> None:
    kinds = set()
    for manifest in manifests:
        try:
            validate_manifest(manifest)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc}")
        kinds.add(manifest["kind"])
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "ScaledObject", "ServiceMonitor"} <= kinds


@pytest.mark.parametrize(
    ("kind", "name", "path", "value"),
    [
        ("Deployment", "worker", ["spec", "template", "spec", "terminationGracePeriod"], 3900),
        ("StatefulSet", "redis", ["spec", "template", "spec", "containers", 0, "argz"], []),
        ("ScaledObject", "worker", ["spec", "minReplicas"], 1),
        ("ServiceMonitor", "comfy-dispatch", ["spec", "endpoints", 0, "scrapeEvery"], "15s"),
    ],
)
def test_manifest_validation_catches_a_misspelled_field(
    manifests: list[dict[str, Any]], kind: str, name: str, path: list[Any], value: Any
) -> None:
    broken = copy.deepcopy(find(manifests, kind, name))
    node: Any = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate_manifest(broken)


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: each resource file is validated on its own above")
    result = run([kubectl, "kustomize", str(K8S)])
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    namespaced = [m for m in rendered if m["kind"] != "Namespace"]
    assert {m["metadata"].get("namespace") for m in namespaced} == {"comfy-dispatch"}
    for manifest in rendered:
        validate_manifest(manifest)


def test_k8s_worker_pod_pairs_one_gpu_comfyui_sidecar_with_a_worker(manifests: list[dict[str, Any]]) -> None:
    pod = find(manifests, "Deployment", "worker")["spec"]["template"]["spec"]
    (comfyui,) = pod["initContainers"]
    (worker,) = pod["containers"]
    # A native sidecar: started before the worker, stopped after it.
    assert comfyui["restartPolicy"] == "Always"
    assert comfyui["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in worker["resources"].get("limits", {})
    assert "127.0.0.1" in comfyui["command"]
    assert "http://127.0.0.1:8188" in worker["args"]
    assert pod["terminationGracePeriodSeconds"] > RUN_TIMEOUT
    assert "preStop" in worker["lifecycle"]
    config = find(manifests, "ConfigMap", "comfy-dispatch")["data"]
    assert float(config["COMFY_DISPATCH_RUN_TIMEOUT"]) < pod["terminationGracePeriodSeconds"]


def test_k8s_redis_keeps_every_accepted_run(manifests: list[dict[str, Any]]) -> None:
    args = " ".join(find(manifests, "StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]["args"])
    assert "--appendonly yes" in args
    assert "--maxmemory-policy noeviction" in args


def test_keda_scales_the_workers_on_queue_depth(manifests: list[dict[str, Any]]) -> None:
    scaled = find(manifests, "ScaledObject", "worker")
    assert find(manifests, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    query = trigger["metadata"]["query"]
    assert metric_names(query) == {"comfy_dispatch_queue_depth"}
    assert query.startswith("sum(")
    assert undeduplicated_api_gauges(query) == []


def test_service_monitor_scrapes_api_scheduler_webhooks_and_workers(manifests: list[dict[str, Any]]) -> None:
    monitor = find(manifests, "ServiceMonitor", "comfy-dispatch")
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    ports = {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]}
    scraped = {}
    for service in (m for m in manifests if m["kind"] == "Service"):
        if service["metadata"]["labels"]["app.kubernetes.io/name"] in expression["values"]:
            scraped[service["metadata"]["name"]] = {p["name"] for p in service["spec"]["ports"]} & ports
    assert set(scraped) == {"api", "scheduler-metrics", "webhooks-metrics", "worker-metrics"}
    assert all(scraped.values()), scraped
    # Each scraped Service selects pods of a workload that declares the port.
    for workload in (m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")):
        pod = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for service in (m for m in manifests if m["kind"] == "Service"):
            if service["spec"]["selector"].items() <= labels.items():
                declared = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
                declared |= {p["name"] for c in pod.get("initContainers", []) for p in c.get("ports", [])}
                for port in service["spec"]["ports"]:
                    assert port["targetPort"] in declared, (service["metadata"]["name"], port)


# --- systemd -----------------------------------------------------------------------------------------

UNITS = [
    "comfyui@.service",
    "comfy-dispatch-worker@.service",
    "comfy-dispatch-api.service",
    "comfy-dispatch-scheduler.service",
    "comfy-dispatch-webhooks.service",
]
# Executables the units name, replaced by stubs of the same name in the test (same arguments).
EXECUTABLES = ["/usr/local/bin/comfy-dispatch", "/opt/ComfyUI/.venv/bin/python"]


def unit_settings(name: str) -> dict[str, list[str]]:
    """``section.Key`` -> values, in order (keys like EnvironmentFile= may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


@pytest.fixture
def verifiable_units(tmp_path: Path) -> Iterator[Path]:
    """The units in a temp dir, their executables pointed at stubs so systemd-analyze can check them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    units = tmp_path / "units"
    units.mkdir()
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        for executable in EXECUTABLES:
            stub = bin_dir / Path(executable).name
            stub.write_text("#!/bin/sh\nexit 0\n")
            stub.chmod(0o755)
            text = text.replace(f"ExecStart={executable} ", f"ExecStart={stub} ")
        (units / name).write_text(text)
    yield units


def test_units_start_the_installed_executables() -> None:
    for name in UNITS:
        (exec_start,) = unit_settings(name)["Service.ExecStart"]
        assert exec_start.split()[0] in EXECUTABLES, (name, exec_start)


def test_systemd_analyze_verifies_the_units(verifiable_units: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    instances = [name.replace("@.", "@0.") for name in UNITS]
    # Our directory first; the trailing ":" keeps the system's units (network-online.target, ...).
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{verifiable_units}:"}
    result = run([analyze, "verify", "--man=no", *instances], cwd=verifiable_units, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # Unknown keys and unparsable values are only warnings to systemd-analyze: none is allowed here.
    ours = [line for line in output.splitlines() if any(n.split("@")[0] in line for n in UNITS)]
    assert ours == [], output


def test_systemd_analyze_check_catches_a_bad_value(verifiable_units: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    unit = verifiable_units / "comfy-dispatch-api.service"
    unit.write_text(unit.read_text().replace("Restart=always", "Restart=sometimes"))
    result = run([analyze, "verify", "--man=no", str(unit)], cwd=verifiable_units)
    assert "sometimes" in result.stdout + result.stderr


def test_worker_unit_is_bound_to_its_comfyui_and_outlasts_a_run() -> None:
    worker = unit_settings("comfy-dispatch-worker@.service")
    assert worker["Unit.BindsTo"] == ["comfyui@%i.service"]
    assert "comfyui@%i.service" in worker["Unit.After"][0].split()
    assert worker["Service.Restart"] == ["always"]
    assert int(worker["Service.TimeoutStopSec"][0]) > RUN_TIMEOUT
    assert "/etc/comfy-dispatch/gpu%i.env" in worker["Service.EnvironmentFile"]
    assert "--comfyui-url http://127.0.0.1:${COMFYUI_PORT}" in worker["Service.ExecStart"][0]
    comfyui = unit_settings("comfyui@.service")
    assert comfyui["Service.Environment"] == ["CUDA_VISIBLE_DEVICES=%i"]
    assert comfyui["Service.EnvironmentFile"] == ["/etc/comfy-dispatch/gpu%i.env"]
    assert "--listen 127.0.0.1 --port ${COMFYUI_PORT}" in comfyui["Service.ExecStart"][0]


# --- Prometheus --------------------------------------------------------------------------------------


def test_promtool_checks_the_config() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = run([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_rules() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = run([promtool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    promtool = require_tool("promtool", "prometheus")
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(PROMETHEUS / "alerts.yml")["groups"] for rule in group["rules"]]


def test_every_alert_is_tested_firing_and_silent_and_has_a_runbook() -> None:
    readme = (ROOT / "README.md").read_text()
    tests = load_yaml(PROMETHEUS / "alerts_test.yml")["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in alert_rules():
        name = rule["alert"]
        outcomes = {bool(case["exp_alerts"]) for case in cases if case["alertname"] == name}
        assert outcomes == {True, False}, f"{name}: needs a test where it fires and one where it stays silent"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["runbook"]
        assert name in readme, f"{name} has no runbook line in README.md"


def test_alerts_use_only_exported_metrics() -> None:
    for rule in alert_rules():
        used = metric_names(rule["expr"])
        assert used and used <= METRIC_NAMES, (rule["alert"], used - METRIC_NAMES)
        assert undeduplicated_api_gauges(rule["expr"]) == [], rule["alert"]


# --- Grafana -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return document


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in dashboard["panels"]:
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return [p for p in flat if p["type"] != "row"]


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(dashboard) for target in panel["targets"]]


def test_dashboard_is_importable_as_provisioned(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == DASHBOARD_UID
    assert "__inputs" not in dashboard and "__requires" not in dashboard
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["tenant"]["type"] == "query"
    ids = [p["id"] for p in dashboard["panels"]] + [
        p["id"] for row in dashboard["panels"] for p in row.get("panels", [])
    ]
    assert len(ids) == len(set(ids))


def test_every_panel_queries_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    for panel in panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    tenant = next(v for v in dashboard["templating"]["list"] if v["name"] == "tenant")
    assert tenant["datasource"]["uid"] == "${datasource}"


def test_dashboard_uses_only_exported_metrics_and_covers_the_topics(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for expr in expressions(dashboard)))
    assert used <= METRIC_NAMES, used - METRIC_NAMES
    for expr in expressions(dashboard):
        assert undeduplicated_api_gauges(expr) == [], expr
    topics = {
        "throughput by status": "comfy_dispatch_runs_completed_total",
        "queue depth": "comfy_dispatch_queue_depth",
        "oldest age": "comfy_dispatch_queue_oldest_age_seconds",
        "wait": "comfy_dispatch_queue_wait_seconds",
        "execution": "comfy_dispatch_comfyui_execution_seconds",
        "workers by state": "comfy_dispatch_workers",
        "ComfyUI health": "comfy_dispatch_comfyui_up",
        "tenant usage": "comfy_dispatch_admission_bucket_level",
        "tenant dispatch": "comfy_dispatch_dispatch_bucket_level",
        "rate limiting": "comfy_dispatch_runs_rejected_total",
        "webhook failures": "comfy_dispatch_webhook_deliveries_total",
        "GPU time per tenant": "comfy_dispatch_gpu_seconds_total",
        "pipeline slots": "comfy_dispatch_ready_slots",
    }
    missing = [topic for topic, metric in topics.items() if metric not in used]
    assert missing == []
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({quantile}, " in e and "queue_wait" in e for e in expressions(dashboard))


def test_dashboard_expressions_are_valid_promql(dashboard: dict[str, Any], tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus")
    # Grafana's variables as Prometheus would see them after interpolation.
    grafana_vars = {"$__rate_interval": "5m", "$tenant": ".*"}
    rules = []
    for i, expr in enumerate(expressions(dashboard)):
        for variable, value in grafana_vars.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run([promtool, "check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_grafana_provisioning_points_at_the_dashboards(compose: dict[str, Any]) -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (provider,) = load_yaml(provisioning / "dashboards" / "comfy-dispatch.yml")["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    (datasource,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"


# --- image -------------------------------------------------------------------------------------------


def test_dockerfile_builds_a_non_root_image_of_the_cli() -> None:
    lines = [
        line.strip()
        for line in (DEPLOY / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "FROM python:3.11-slim"
    assert 'ENTRYPOINT ["comfy-dispatch"]' in lines
    (user,) = [line for line in lines if line.startswith("USER ")]
    assert user.split()[1] not in ("root", "0")
    assert any(line.startswith("RUN pip install .") for line in lines)
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
