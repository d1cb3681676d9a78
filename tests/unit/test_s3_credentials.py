"""S3 credentials from the Secret named in spec.artifacts: the Jobs and the servers get each key by reference
(secretKeyRef), never a value, and spec.artifacts.endpointUrl as AWS_ENDPOINT_URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from optimodel_operator.api.spec import S3_OPTIONAL_KEYS, S3_REQUIRED_KEYS, parse_spec
from optimodel_operator.builders.job import build_job
from optimodel_operator.builders.server import CACHE_DIR, build_server_deployment
from optimodel_operator.planner.revision import JOB_WORK_DIR, job_plans
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

STORE = "s3://models/store"
CONFIG = PlannerConfig()


def _spec(artifacts: dict[str, Any] | None) -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["source"]["uri"] = "s3://models/digits/model.onnx"
    spec["evaluation"]["dataset"] = "s3://models/digits/eval.npz"
    if artifacts is None:
        spec.pop("artifacts", None)
    else:
        spec["artifacts"] = artifacts
    return spec


def _job_container(spec: dict[str, Any]) -> dict[str, Any]:
    parsed = parse_spec(spec)
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, uid="uid-1")
    plan = job_plans(parsed, "m", STORE)[0]
    job = build_job(view, parsed, plan, "r1", STORE, CONFIG)
    return job["spec"]["template"]["spec"]["containers"][0]


def _server_container(spec: dict[str, Any], faults: dict[str, str] | None = None) -> dict[str, Any]:
    parsed = parse_spec(spec)
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, uid="uid-1")
    deployment = build_server_deployment(view, parsed.node_pools[0], "r1", "int8", f"{STORE}/manifests/int8/x.json",
                                         "a" * 64, CONFIG, faults=faults, artifacts=parsed.artifacts)
    return deployment["spec"]["template"]["spec"]["containers"][0]


def _aws_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = [e for e in container.get("env", []) if e["name"].startswith("AWS_")]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"one entry per variable, got {names}"
    return {e["name"]: e for e in entries}


@pytest.mark.parametrize("container_of", [_job_container, _server_container], ids=["job", "server"])
def test_each_key_comes_from_the_secret_by_reference(container_of: Any) -> None:
    container = container_of(_spec({"uri": STORE, "credentials": {"name": "store-keys"}}))
    env = _aws_env(container)
    assert set(env) == {*S3_REQUIRED_KEYS, *S3_OPTIONAL_KEYS}
    for key, entry in env.items():
        assert "value" not in entry, f"{key} must not carry a value in the pod spec"
        assert entry["valueFrom"] == {"secretKeyRef": {"name": "store-keys", "key": key,
                                                       **({"optional": True} if key in S3_OPTIONAL_KEYS else {})}}
    assert "envFrom" not in container, "only the named keys, not every key of the Secret"


@pytest.mark.parametrize("container_of", [_job_container, _server_container], ids=["job", "server"])
def test_the_spec_endpoint_replaces_the_secrets(container_of: Any) -> None:
    endpoint = "http://s3.optimodel-storage.svc.cluster.local:8333"
    env = _aws_env(container_of(_spec({"uri": STORE, "credentials": {"name": "store-keys"}, "endpointUrl": endpoint})))
    assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": endpoint}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "store-keys"


@pytest.mark.parametrize("container_of", [_job_container, _server_container], ids=["job", "server"])
def test_no_credentials_no_aws_environment(container_of: Any) -> None:
    assert _aws_env(container_of(_spec({"uri": STORE}))) == {}
    assert _aws_env(container_of(_spec(None) | {"artifacts": {"uri": "file:///srv/store"}})) == {}


def test_an_endpoint_without_a_secret_is_passed_alone() -> None:
    env = _aws_env(_job_container(_spec({"uri": STORE, "endpointUrl": "https://objects.example.com"})))
    assert env == {"AWS_ENDPOINT_URL": {"name": "AWS_ENDPOINT_URL", "value": "https://objects.example.com"}}


def test_server_keeps_its_fault_flags_next_to_the_credentials() -> None:
    container = _server_container(_spec({"uri": STORE, "credentials": {"name": "store-keys"}}), {"latency-ms": "150"})
    names = [e["name"] for e in container["env"]]
    assert "OPTIMODEL_SERVER_FAULT_LATENCY_MS" in names and "AWS_ACCESS_KEY_ID" in names


def test_object_store_uris_mount_nothing_from_the_host() -> None:
    spec = _spec({"uri": STORE, "credentials": {"name": "store-keys"}})
    container = _job_container(spec)
    assert [m["mountPath"] for m in container["volumeMounts"]] == [JOB_WORK_DIR], "only the Job's scratch folder"
    assert [m["mountPath"] for m in _server_container(spec)["volumeMounts"]] == [CACHE_DIR]


def test_the_pod_specs_hold_only_the_secrets_name() -> None:
    spec = _spec({"uri": STORE, "credentials": {"name": "store-keys"}})
    text = json.dumps([_job_container(spec), _server_container(spec)])
    assert text.count("store-keys") == 2 * len((*S3_REQUIRED_KEYS, *S3_OPTIONAL_KEYS))


@pytest.mark.parametrize("endpoint", ["s3.example.com", "ftp://s3.example.com", "http://", "http://a b"])
def test_endpoint_url_must_be_http_or_https(endpoint: str) -> None:
    with pytest.raises(ValidationError, match="endpoint_url|endpointUrl"):
        parse_spec(_spec({"uri": STORE, "endpointUrl": endpoint}))
