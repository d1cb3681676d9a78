"""Small kubectl helpers shared by the local cluster's integration tests."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from optimodel_localcluster.cluster import LocalCluster
from optimodel_operator.testing.cluster import wait_for as _wait_for

Json = dict[str, Any]


def apply(cluster: LocalCluster, namespace: str, manifest: str) -> None:
    cluster.kubectl("apply", "-n", namespace, "-f", "-", input=manifest)


def get(cluster: LocalCluster, namespace: str, *what: str) -> Json:
    return json.loads(cluster.kubectl("get", "-n", namespace, *what, "-o", "json").stdout)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120, interval: float = 1.0) -> Any:
    return _wait_for(check, timeout, what, interval)
