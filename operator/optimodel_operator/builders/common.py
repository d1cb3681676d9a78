"""What every child shares: the owner reference, the labels, the volumes for node-local paths."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

from optimodel_operator.api.meta import API_VERSION, KIND
from optimodel_operator.api.spec import S3_OPTIONAL_KEYS, S3_REQUIRED_KEYS, ArtifactStore
from optimodel_operator.planner.naming import LABEL_COMPONENT, LABEL_MANAGED_BY, LABEL_MODEL, MANAGED_BY, dns_label, label_value
from optimodel_operator.planner.view import ResourceView

Manifest = dict[str, Any]


def owner_reference(view: ResourceView) -> Manifest:
    # controller=true: the garbage collector deletes children with the resource; our code never does.
    return {"apiVersion": API_VERSION, "kind": KIND, "name": view.name, "uid": view.uid,
            "controller": True, "blockOwnerDeletion": True}


def base_labels(view: ResourceView, component: str) -> dict[str, str]:
    return {LABEL_MODEL: label_value(view.name), LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: component}


def metadata(view: ResourceView, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> Manifest:
    out: Manifest = {"name": name, "namespace": view.namespace, "labels": labels,
                     "ownerReferences": [owner_reference(view)]}
    if annotations:
        out["annotations"] = annotations
    return out


def local_path(uri: str) -> str | None:
    """The node-local path of a file:// or absolute URI; None for object stores (s3://, gs://)."""
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    return uri if uri.startswith("/") else None


def host_path_volumes(
    uris: Iterable[str], *, writable: Iterable[str] = (), prefix: str = "local"
) -> tuple[list[Manifest], list[Manifest]]:
    """hostPath volumes and mounts (at the same path) for the folders of node-local URIs.

    Object-store URIs need no volume (the pod reads them with its credentials). A folder inside
    another one already mounted is not mounted again. The folder of a `writable` URI is mounted
    read-write and created if missing; the others read-only and must exist."""
    writable_dirs = {local_path(u) for u in writable} - {None}
    folders: dict[str, bool] = {}
    for uri in [*writable, *uris]:
        path = local_path(uri)
        if path is None:
            continue
        folder = path.rstrip("/") if path in writable_dirs else posixpath.dirname(path.rstrip("/"))
        folders.setdefault(folder, path in writable_dirs)
    kept = sorted(f for f in folders if not any(f != o and f.startswith(o.rstrip("/") + "/") for o in folders))
    volumes, mounts = [], []
    for index, folder in enumerate(kept):
        name = dns_label(prefix, str(index))
        write = folders[folder] or any(folders[f] for f in folders if f.startswith(folder.rstrip("/") + "/"))
        volumes.append({"name": name, "hostPath": {"path": folder, "type": "DirectoryOrCreate" if write else "Directory"}})
        mounts.append({"name": name, "mountPath": folder, "readOnly": not write})
    return volumes, mounts


def restricted_security_context() -> Manifest:
    """The container security context of the Pod Security Standard `restricted`."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def store_credentials_env(artifacts: ArtifactStore | None) -> list[Manifest]:
    """Environment of a pod that reads or writes object stores: each key of `artifacts.credentials` by
    reference (secretKeyRef: the kubelet reads the Secret, the operator never does, and no value lands in
    a spec), and `artifacts.endpointUrl` as AWS_ENDPOINT_URL, which botocore (s3fs) reads."""
    if artifacts is None:
        return []
    env: list[Manifest] = []
    if artifacts.credentials is not None:
        secret = artifacts.credentials.name
        for key in (*S3_REQUIRED_KEYS, *S3_OPTIONAL_KEYS):
            if key == "AWS_ENDPOINT_URL" and artifacts.endpoint_url:
                continue  # the spec's endpoint wins; two entries of one name would leave it to ordering
            ref: Manifest = {"name": secret, "key": key}
            if key in S3_OPTIONAL_KEYS:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if artifacts.endpoint_url:
        env.append({"name": "AWS_ENDPOINT_URL", "value": artifacts.endpoint_url})
    return env
