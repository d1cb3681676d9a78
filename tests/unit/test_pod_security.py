"""Every pod the operator makes meets the Pod Security Standard `restricted` when its data and store are object
stores (s3://, gs://, ...): the checks below are that standard's rules. A file:// store is node-local and is
mounted as hostPath, which `restricted` (and `baseline`) forbid: such models run in namespaces that allow it.
tests/e2e/test_s3_end_to_end.py runs a model in a namespace that enforces `restricted`."""

from __future__ import annotations

from typing import Any

from optimodel_operator.api.spec import parse_spec
from optimodel_operator.builders.job import build_job
from optimodel_operator.builders.server import build_server_deployment
from optimodel_operator.planner.revision import job_plans
from optimodel_operator.planner.view import PlannerConfig, ResourceView
from optimodel_operator.testing.manifests import base_manifest

STORE = "s3://models/store"


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What keeps `pod` (a PodSpec) out of a namespace labelled pod-security.kubernetes.io/enforce=restricted."""
    found = []
    pod_context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(key)
    found += [f"volume {v['name']} is a hostPath" for v in pod.get("volumes") or [] if "hostPath" in v]
    for container in (pod.get("initContainers") or []) + pod["containers"]:
        context = container.get("securityContext") or {}
        name = container["name"]
        if context.get("privileged"):
            found.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            found.append(f"{name}: runAsNonRoot is not true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            found.append(f"{name}: runs as uid 0")
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile {seccomp}")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            found.append(f"{name}: capabilities not all dropped")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            found.append(f"{name}: hostPort")
    return found


def _spec(store: str) -> dict[str, Any]:
    spec = base_manifest()["spec"]
    spec["artifacts"] = {"uri": store, "credentials": {"name": "store-keys"}}
    return spec


def _pods(store: str) -> dict[str, dict[str, Any]]:
    spec = _spec(store)
    parsed = parse_spec(spec)
    view = ResourceView(name="m", namespace="ns", generation=1, spec=spec, uid="uid-1")
    pods = {}
    for plan in job_plans(parsed, "m", store):
        pods[f"job/{plan.provider}"] = build_job(view, parsed, plan, "r1", store, PlannerConfig())["spec"]["template"]["spec"]
    for pool in parsed.node_pools:
        deployment = build_server_deployment(view, pool, "r1", "int8", f"{store}/manifests/int8/x.json", "a" * 64,
                                             PlannerConfig(), artifacts=parsed.artifacts)
        pods[f"server/{pool.name}"] = deployment["spec"]["template"]["spec"]
    return pods


def test_jobs_and_servers_on_object_stores_meet_restricted() -> None:
    pods = _pods(STORE)
    assert any(k.startswith("job/") for k in pods) and any(k.startswith("server/") for k in pods)
    assert {name: restricted_violations(pod) for name, pod in pods.items()} == {name: [] for name in pods}


def test_the_checker_catches_what_restricted_forbids() -> None:
    pod = _pods(STORE)["server/" + parse_spec(_spec(STORE)).node_pools[0].name]
    pod["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    assert restricted_violations(pod) == ["volume h is a hostPath", "server: allowPrivilegeEscalation is not false"]


def test_a_node_local_store_needs_hostpath_and_says_so() -> None:
    pods = _pods("file:///var/lib/optimodel/store")
    assert all(any("hostPath" in v for v in pod["volumes"]) for pod in pods.values())
