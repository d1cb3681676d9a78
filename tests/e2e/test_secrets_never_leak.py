"""No secret value in status, events, logs, ConfigMaps or pod specs (issue 14, item 3), checked by planting
marker secrets and reading back everything a user or a tool can read.

The secrets the operator meets are S3 credentials: `spec.artifacts.credentials` names a Secret whose keys
reach the optimization Jobs and the model servers by secretKeyRef (the operator never reads the Secret).
Two ways they could still leak:

* keys the store rejects: the Job's probe fails on them and its message goes to the Job's log, its
  termination message, the OptimizedModel's status and the operator's events and log. Each key here carries
  a marker made for this test (`optimodel-marker-<uuid>`); the marker must be nowhere, the access key id's
  included. (AWS treats the access key id as an identifier rather than a secret, but it names an account, and
  an error message of a service that echoes it would publish it in a status any reader of the namespace
  sees: it is held to the same rule.) Two cases: a key id the store does not know (InvalidAccessKeyId) and the
  store's real key id with a marker secret key (SignatureDoesNotMatch: the secret key was used to sign).
* keys that work: a model optimized and served from the bucket with the store's real keys; neither key is
  anywhere either, nor in the run records and reports the Job wrote to the store.

Each search first asserts that what it read has content (the failed Job's log shows the refusal, the events
name the model, the operator's log is not empty), so an empty read cannot pass it.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import s3fs
from test_s3_end_to_end import (  # the same bucket, folder and spec as the S3 end-to-end test
    SECRET,
    _secret,
    _spec_in_the_bucket,
    _wait_ready,
    bucket,
    prefix,
)

from optimodel_localcluster import seaweedfs
from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.demo import OPERATOR_NAMESPACE
from optimodel_operator.examples import Published
from optimodel_operator.testing.cluster import condition, until_status

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

__all__ = ["bucket", "prefix"]  # fixtures: imported so that pytest finds them in this module

# Every environment variable a pod could hold a credential in: each must come from the Secret by reference.
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@dataclass
class Readable:
    """Everything a user or a tool can read about a namespace's model, as text, by where it came from."""

    texts: dict[str, str]
    pods: list[dict[str, Any]]

    def containing(self, value: str) -> list[str]:
        return [where for where, text in self.texts.items() if value in text]

    def logs_of(self, component: str) -> list[str]:
        """The logs of the namespace's pods of one component (optimizer: the Jobs', server: the servers')."""
        names = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.pods
                 if p["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component}
        return [text for where, text in self.texts.items()
                if where.startswith("log ") and where[4:].rsplit("/", 1)[0] in names]


def _json(cluster: LocalCluster, *args: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl(*args, "-o", "json").stdout)


def _pod_logs(cluster: LocalCluster, namespace: str, pods: list[dict[str, Any]]) -> dict[str, str]:
    """Each pod's log, every container (init containers included), the previous run's too where there was one."""
    logs: dict[str, str] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        spec = pod["spec"]
        for container in [c["name"] for c in spec.get("initContainers", []) + spec["containers"]]:
            current = cluster.kubectl("logs", "-n", namespace, name, "-c", container, check=False)
            previous = cluster.kubectl("logs", "-n", namespace, name, "-c", container, "--previous", check=False)
            logs[f"log {namespace}/{name}/{container}"] = current.stdout + current.stderr + previous.stdout
    return logs


def _readable(cluster: LocalCluster, namespace: str, name: str) -> Readable:
    model = _json(cluster, "get", "optimizedmodels", name, "-n", namespace)
    pods = _json(cluster, "get", "pods", "-n", namespace)["items"]
    operator_pods = _json(cluster, "get", "pods", "-n", OPERATOR_NAMESPACE)["items"]
    texts = {
        "OptimizedModel": json.dumps(model),
        "events": json.dumps(_json(cluster, "get", "events", "-n", namespace)),
        "events (events.k8s.io)": json.dumps(_json(cluster, "get", "events.events.k8s.io", "-n", namespace)),
        "operator events": json.dumps(_json(cluster, "get", "events", "-n", OPERATOR_NAMESPACE)),
        "configmaps": json.dumps(_json(cluster, "get", "configmaps", "-n", namespace)),
        "operator configmaps": json.dumps(_json(cluster, "get", "configmaps", "-n", OPERATOR_NAMESPACE)),
        "pods, jobs, deployments, replicasets, services": json.dumps(
            _json(cluster, "get", "pods,jobs,deployments,replicasets,services", "-n", namespace)),
        **_pod_logs(cluster, namespace, pods),
        **_pod_logs(cluster, OPERATOR_NAMESPACE, operator_pods),
    }
    return Readable(texts, pods)


def _assert_keys_by_reference(pods: list[dict[str, Any]]) -> None:
    """Every credential in every pod's environment comes from the Secret by secretKeyRef, never as a value."""
    checked = 0
    for pod in pods:
        spec = pod["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for env in container.get("env", []):
                if env["name"] in CREDENTIAL_KEYS:
                    assert "value" not in env, f"{pod['metadata']['name']}/{container['name']}: {env['name']} by value"
                    assert env["valueFrom"]["secretKeyRef"]["name"] == SECRET, env
                    checked += 1
            assert not container.get("envFrom"), "no whole Secret poured into the environment"
    assert checked >= 2 * len(pods), f"each pod reads both keys by reference ({checked} references in {len(pods)} pods)"


def _apply_model(cluster: LocalCluster, namespace: str, keys: dict[str, str], folder: str) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET}, "type": "Opaque", "stringData": keys}
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))
    manifest = _spec_in_the_bucket(folder)
    # One variant is enough to run every path a key takes (probe, reads, writes, server); it keeps the run short.
    manifest["spec"]["optimizations"] = [o for o in manifest["spec"]["optimizations"] if o["name"] == "int8"]
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


def _restricted(cluster: LocalCluster, namespace: str) -> None:
    # As in the S3 end-to-end test: the pods under test are the ones PodSecurity `restricted` admits.
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                    "pod-security.kubernetes.io/enforce-version=latest")


def _upload(bucket: s3fs.S3FileSystem, published: Published, folder: str) -> None:
    for local in (published.model, published.evaluation, published.train):
        bucket.put_file(str(local), f"{folder}/digits/{local.name}")


@pytest.mark.parametrize("rejected", ["unknown-key-id", "wrong-secret-key"])
def test_rejected_keys_fail_the_job_with_a_reason_and_leak_nowhere(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, bucket: s3fs.S3FileSystem,
    prefix: str, rejected: str,
) -> None:
    _restricted(local_cluster, namespace)
    _upload(bucket, operator_in_cluster, prefix)
    store = _secret(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    marker = f"optimodel-marker-{uuid.uuid4().hex}"
    key_id = f"AKID-{marker}" if rejected == "unknown-key-id" else store["AWS_ACCESS_KEY_ID"]
    keys = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": f"secret-{marker}",
            "AWS_ENDPOINT_URL": store["AWS_ENDPOINT_URL"]}
    _apply_model(local_cluster, namespace, keys, prefix)

    status = until_status(local_cluster.kubectl, namespace, "digits", lambda s: s.get("phase") == "Failed",
                          "the Job refused the keys", timeout=300)
    optimized = condition({"status": status}, "Optimized") or {}
    code = "InvalidAccessKeyId" if rejected == "unknown-key-id" else "SignatureDoesNotMatch"
    # The status says why: the credentials, the service's own word for it, and the input that was refused.
    assert optimized.get("status") == "False" and optimized.get("reason") == "CredentialsInvalid", optimized
    assert code in optimized["message"] and f"s3://{prefix}/digits/model.pt" in optimized["message"], optimized

    readable = _readable(local_cluster, namespace, "digits")
    job_logs = readable.logs_of("optimizer")
    # The searches read something: the refusal in the Job's log and in the events, a non-empty operator log.
    assert job_logs and all("CredentialsInvalid" in text and code in text for text in job_logs), job_logs
    assert "CredentialsInvalid" in readable.texts["events"], "an event says why the model failed"
    assert any(where.startswith(f"log {OPERATOR_NAMESPACE}/") and text.strip() for where, text in readable.texts.items())
    assert len(readable.texts) >= 10, sorted(readable.texts)
    # The refusal names the input, in this test's own bucket folder (unique): it is found where the refusal
    # went, so these reads hold what the Job said; the marker, had it been said, would be there too.
    said = readable.containing(f"s3://{prefix}/digits/model.pt")
    assert "events" in said and f"log {namespace}/" in " ".join(said), said
    _assert_keys_by_reference(readable.pods)
    assert readable.containing(marker) == [], f"the marker key is in {readable.containing(marker)}"


def test_working_keys_serve_the_model_and_leak_nowhere(
    local_cluster: LocalCluster, namespace: str, operator_in_cluster: Published, bucket: s3fs.S3FileSystem,
    prefix: str,
) -> None:
    _restricted(local_cluster, namespace)
    _upload(bucket, operator_in_cluster, prefix)
    keys = _secret(local_cluster, seaweedfs.NAMESPACE, seaweedfs.USER_SECRET)
    _apply_model(local_cluster, namespace, keys, prefix)
    _wait_ready(local_cluster, namespace, "digits")

    readable = _readable(local_cluster, namespace, "digits")
    job_logs, server_logs = readable.logs_of("optimizer"), readable.logs_of("server")
    assert job_logs and all("open inputs and store" in text for text in job_logs), job_logs
    assert server_logs and all(text.strip() for text in server_logs), "the servers' logs were read"
    assert "digits" in readable.texts["events"]
    _assert_keys_by_reference(readable.pods)
    # What the Job wrote to the store and anyone with read access reads: run records, manifests, reports.
    written = [path for path in bucket.find(f"{prefix}/store") if path.endswith((".json", ".html"))]
    assert written, "the run wrote its record, manifests and report"
    readable.texts.update({f"store {path}": bucket.cat_file(path).decode(errors="replace") for path in written})
    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert readable.containing(keys[key]) == [], f"{key}'s value is in {readable.containing(keys[key])}"
