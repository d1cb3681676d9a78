"""Pod spec -> container plan: env resolution, $(VAR) expansion, downward API, entrypoints, mounts."""

from __future__ import annotations

import pytest

from optimodel_localcluster.node_agent.plan import (
    ContainerPlan,
    PlanError,
    container_argv,
    container_env,
    container_plan,
    expand,
    field_value,
    image_repository,
    resource_value,
)


class Source:
    def __init__(self, config_maps: dict | None = None, secrets: dict | None = None) -> None:
        self.config_maps = config_maps or {}
        self.secrets = secrets or {}

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.config_maps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return self.secrets.get((namespace, name))


def make_pod(container: dict, **status: object) -> dict:
    return {
        "metadata": {"name": "web-1", "namespace": "ns", "uid": "u-1", "labels": {"app": "web", "tier": "a"}},
        "spec": {"nodeName": "cpu-0", "serviceAccountName": "default", "containers": [container]},
        "status": {"podIP": "10.244.1.5", "hostIP": "127.0.0.1", **status},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("a$", "a$"),
        ("$$$(A)", "$1"),
    ],
)
def test_expand_follows_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_env_resolves_every_source_in_kubelet_order() -> None:
    container = {
        "name": "main",
        "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}},
        "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}, {"secretRef": {"name": "sec"}}],
        "env": [
            {"name": "PLAIN", "value": "x"},
            {"name": "COMPOSED", "value": "$(PLAIN)-$(CFG_mode)-$(LATER)"},
            {"name": "LATER", "value": "late"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "CPUS", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}},
            {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "KEY", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "password"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k", "optional": True}}},
        ],
    }
    source = Source(
        config_maps={("ns", "cfg"): {"mode": b"fast", "bad key": b"skipped"}},
        secrets={("ns", "sec"): {"password": b"s3cret"}},
    )
    env = container_env(make_pod(container), container, source, {"cpu": "4", "memory": "8Gi"})
    assert env == {
        "CFG_mode": "fast",
        "password": "s3cret",
        "PLAIN": "x",
        "COMPOSED": "x-fast-$(LATER)",  # only variables defined earlier expand
        "LATER": "late",
        "POD": "web-1",
        "IP": "10.244.1.5",
        "APP": "web",
        "CPUS": "2",  # ceil(1.5)
        "MEM_MI": "1024",
        "KEY": "fast",
        "PASS": "s3cret",
    }


def test_missing_config_map_is_a_config_error_naming_it() -> None:
    container = {"name": "main", "env": [{"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}]}
    with pytest.raises(PlanError) as error:
        container_env(make_pod(container), container, Source(), {})
    assert error.value.reason == "CreateContainerConfigError"
    assert 'configmap "cfg" not found' in error.value.message


def test_missing_secret_key_is_a_config_error_naming_the_key() -> None:
    container = {"name": "main", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
    with pytest.raises(PlanError, match="couldn't find key k in Secret ns/s"):
        container_env(make_pod(container), container, Source(secrets={("ns", "s"): {"other": b"1"}}), {})


def test_field_values_of_the_downward_api() -> None:
    pod = make_pod({"name": "main"})
    assert field_value(pod, "metadata.namespace") == "ns"
    assert field_value(pod, "metadata.uid") == "u-1"
    assert field_value(pod, "spec.nodeName") == "cpu-0"
    assert field_value(pod, "metadata.labels") == 'app="web"\ntier="a"'
    with pytest.raises(PlanError, match="unsupported fieldRef"):
        field_value(pod, "spec.containers")


def test_resource_limits_fall_back_to_node_allocatable() -> None:
    pod = make_pod({"name": "main", "resources": {"requests": {"cpu": "250m"}}})
    assert resource_value(pod, "main", "limits.cpu", None, {"cpu": "4"}) == "4"
    assert resource_value(pod, "main", "requests.cpu", "1m", {"cpu": "4"}) == "250"
    with pytest.raises(PlanError, match="unsupported resourceFieldRef"):
        resource_value(pod, "main", "limits.gpu", None, {})


@pytest.mark.parametrize(
    ("image", "repository"),
    [
        ("optimodel/server", "optimodel/server"),
        ("optimodel/server:0.1.0", "optimodel/server"),
        ("localhost:5000/optimodel/jobs:dev", "optimodel/jobs"),
        ("ghcr.io/optimodel/server@sha256:abc", "optimodel/server"),
        ("docker.io/library/python:3.11", "python"),
        ("busybox", "busybox"),
    ],
)
def test_image_repository(image: str, repository: str) -> None:
    assert image_repository(image) == repository


def test_argv_uses_command_args_then_the_entrypoint_table() -> None:
    table = {"optimodel/server": ["python", "-m", "optimodel_server"]}
    env = {"PORT": "8080"}
    assert container_argv({"command": ["serve"], "args": ["--port", "$(PORT)"]}, env, table) == ["serve", "--port", "8080"]
    assert container_argv({"image": "optimodel/server:1", "args": ["--port=$(PORT)"]}, env, table) == [
        "python", "-m", "optimodel_server", "--port=8080"]
    with pytest.raises(PlanError) as error:
        container_argv({"image": "nginx:1.27"}, env, table)
    assert error.value.reason == "CreateContainerError"
    assert "'nginx:1.27' has no entrypoint" in error.value.message


def test_plan_maps_mounts_with_sub_paths_and_rejects_escapes() -> None:
    container = {
        "name": "main",
        "command": ["true"],
        "workingDir": "/work",
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf", "readOnly": True},
        ],
    }
    pod = make_pod(container)
    plan = container_plan(pod, container, source=Source(), volume_paths={"data": "/v/data", "cfg": "/v/cfg"},
                          node_allocatable={}, entrypoints={}, default_path="/venv/bin:/usr/bin", hostname="web-1")
    assert isinstance(plan, ContainerPlan)
    assert plan.env["PATH"] == "/venv/bin:/usr/bin" and plan.env["HOSTNAME"] == "web-1"
    assert plan.working_dir == "/work"
    assert [(m.host_path, m.container_path, m.read_only) for m in plan.mounts] == [
        ("/v/data", "/data", False), ("/v/cfg/app.conf", "/etc/app.conf", True)]
    container["volumeMounts"] = [{"name": "data", "mountPath": "/x", "subPath": "../escape"}]
    with pytest.raises(PlanError, match="invalid subPath"):
        container_plan(pod, container, source=Source(), volume_paths={"data": "/v/data"}, node_allocatable={},
                       entrypoints={}, default_path="", hostname="h")
    container["volumeMounts"] = [{"name": "nfs-share", "mountPath": "/x"}]
    with pytest.raises(PlanError, match="no mappable volume"):
        container_plan(pod, container, source=Source(), volume_paths={}, node_allocatable={}, entrypoints={},
                       default_path="", hostname="h")
