"""The Sentinel and Cluster deployments: Compose overrides and Kubernetes
manifests, checked offline against their schemas and against the fabric's own
URL parser. (Image pulls, a real Compose run and a real Kubernetes cluster are
not available here; the failover behaviour itself is tested against real
redis-server processes in tests/integration/broker/test_failover.py.)"""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fabric_worker.broker.sentinel_url import parse_sentinel_url
from tests.deploy.test_containers import DOCKER, K8S_VERSIONS, compose_validator, load_yaml_docs


def merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings key by key, anything
    else (commands, lists) replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    return copy.deepcopy(override)


def merged(name: str) -> dict[str, Any]:
    base = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    override = yaml.safe_load((DOCKER / name).read_text())
    result: dict[str, Any] = merge(base, override)
    return result


OVERRIDES = ("compose.sentinel.yaml", "compose.cluster.yaml")


@pytest.mark.parametrize("name", OVERRIDES)
def test_override_merged_matches_the_compose_specification(name: str) -> None:
    doc = merged(name)
    errors = [f"{list(e.path)}: {e.message}" for e in compose_validator().iter_errors(doc)]
    assert not errors, "\n".join(errors)


def fabric_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if "build" in s}


@pytest.mark.parametrize("name", OVERRIDES)
def test_every_fabric_service_is_pointed_at_the_replicated_redis(name: str) -> None:
    base_url = yaml.safe_load((DOCKER / "compose.yaml").read_text())["x-fabric"]["environment"][
        "FABRIC_REDIS_URL"
    ]
    services = fabric_services(merged(name))
    assert services
    for service_name, service in services.items():
        url = service["environment"]["FABRIC_REDIS_URL"]
        assert url != base_url, service_name


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command", [])
    return " ".join(command) if isinstance(command, list) else str(command)


def test_sentinel_url_names_the_sentinels_and_their_service() -> None:
    doc = merged("compose.sentinel.yaml")
    sentinels = {n for n in doc["services"] if n.startswith("sentinel-")}
    conf = doc["x-sentinel-conf"]["SENTINEL_CONF"]
    monitor = next(line.split() for line in conf.splitlines() if "sentinel monitor" in line)
    _, _, service, host, port, quorum = monitor
    assert host in doc["services"] and port == "6379"
    assert int(quorum) > len(sentinels) // 2  # a majority: one sentinel alone decides nothing
    for fabric in fabric_services(doc).values():
        target = parse_sentinel_url(fabric["environment"]["FABRIC_REDIS_URL"])
        assert {h for h, _ in target.sentinels} == sentinels
        assert target.service == service
        assert {p for _, p in target.sentinels} == {26379}


@pytest.mark.parametrize(
    ("name", "prefix"),
    [("compose.sentinel.yaml", "redis"), ("compose.cluster.yaml", "redis-node-")],
)
def test_every_data_node_keeps_an_aof_and_never_evicts(name: str, prefix: str) -> None:
    doc = merged(name)
    nodes = {n: s for n, s in doc["services"].items() if n.startswith(prefix)}
    assert len(nodes) >= 3
    for node_name, service in nodes.items():
        text = command_text(service)
        assert "--appendonly yes" in text, node_name
        assert "--maxmemory-policy noeviction" in text, node_name


def test_cluster_is_created_before_the_namespace() -> None:
    doc = merged("compose.cluster.yaml")
    init = doc["services"]["init"]
    assert init["depends_on"]["cluster-create"]["condition"] == "service_completed_successfully"
    create = command_text(doc["services"]["cluster-create"])
    assert "--cluster-replicas 1" in create and "getent hosts" in create
    nodes = [n for n in doc["services"] if n.startswith("redis-node-")]
    assert len(nodes) == 6
    assert all(f"redis-node-{i}" in create for i in range(1, 7))


def k8s_docs(folder: str) -> list[dict[str, Any]]:
    paths = sorted((DOCKER / "k8s" / folder).glob("*.yaml"))
    assert paths, folder
    return [doc for path in paths for doc in load_yaml_docs(path)]


@pytest.mark.parametrize("folder", ["sentinel", "cluster"])
def test_k8s_manifests_match_the_kubernetes_schemas(folder: str) -> None:
    for doc in k8s_docs(folder):
        assert doc["metadata"]["namespace"] == "fabric", doc["metadata"]["name"]
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(map(str, exc.path))
                pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} on {version}: {path}")


def test_k8s_schema_check_can_fail() -> None:
    broken = copy.deepcopy(next(d for d in k8s_docs("sentinel") if d["kind"] == "StatefulSet"))
    broken["spec"]["replicaz"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("folder", ["sentinel", "cluster"])
def test_k8s_redis_pods_run_locked_down(folder: str) -> None:
    for doc in k8s_docs(folder):
        if doc["kind"] != "StatefulSet":
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, container["name"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["capabilities"]["drop"] == ["ALL"], container["name"]


def test_k8s_sentinel_url_config_map_parses() -> None:
    maps = [d for d in k8s_docs("sentinel") if d["kind"] == "ConfigMap"]
    urls = [v for d in maps for k, v in d.get("data", {}).items() if k == "FABRIC_REDIS_URL"]
    assert len(urls) == 1
    target = parse_sentinel_url(urls[0])
    assert len(target.sentinels) == 3 and target.service


def test_merge_replaces_lists_and_merges_mappings() -> None:
    assert merge({"a": {"x": 1, "y": [1]}, "b": 1}, {"a": {"y": [2]}}) == {
        "a": {"x": 1, "y": [2]},
        "b": 1,
    }
