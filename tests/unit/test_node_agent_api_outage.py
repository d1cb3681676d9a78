"""A container (re)started while the API server is unreachable waits and is tried again, as a kubelet does.

Found by tests/e2e/test_faults.py: the operator lost its Lease while the API server restarted and exited; the
node agent, restarting its container, read the pod's ConfigMap from the API server, got a connection error and
its worker for that pod ended. The pod stayed "Running" with no process, and "Terminating" when deleted."""

from __future__ import annotations

import ipaddress
import socket
import time
from pathlib import Path

import yaml

from optimodel_localcluster.node_agent.config import NodeAgentConfig
from optimodel_localcluster.node_agent.kubeapi import KubeApi
from optimodel_localcluster.node_agent.podworker import AgentContext, PodWorker


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_configmap_unreadable_for_a_connection_error_makes_the_container_wait(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{_closed_port()}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    config = NodeAgentConfig()
    node = config.nodes()[0]
    context = AgentContext(api=KubeApi(kubeconfig, timeout=2), config=config, state_dir=tmp_path / "state",
                           nodes={node.name: node}, pod_cidrs={node.name: ipaddress.IPv4Network("10.244.1.0/24")})
    pod = {"metadata": {"namespace": "ns", "name": "p", "uid": "uid-1", "resourceVersion": "1"},
           "spec": {"nodeName": node.name, "hostNetwork": True,
                    "containers": [{"name": "main", "image": "optimodel/server",
                                    "volumeMounts": [{"name": "settings", "mountPath": "/settings"}]}],
                    "volumes": [{"name": "settings", "configMap": {"name": "settings"}}]}}
    worker = PodWorker(context, pod, None)
    (container,) = worker.containers
    before = time.monotonic()
    worker._maybe_start(container)  # raised (and ended the worker) before the fix
    record = container.record
    assert record.state == "waiting" and record.reason == "CreateContainerError", record
    assert record.message and "connect" in record.message.lower(), record.message
    assert container.next_start > before, "tried again after a pause"
    assert container.state.handle is None, "nothing started"
