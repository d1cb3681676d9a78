"""A pod worker that ends on an exception nobody foresaw is logged with its traceback and replaced, after a
back-off, by a worker that re-adopts the pod's running container; a worker that ends as planned (its pod gone)
is not replaced, and a crashed worker's pod deleted during the back-off has its processes stopped.

Before, the agent skipped a pod whose worker had finished, whatever the cause: its processes ran unattended
(no restart, no probe, no status) and a deletion never finished (docs/reliability.md, "What the faults found").

The agent and its workers are the real ones, and so is the container (a `sleep` under the agent's shim); the
API server is a small HTTP server answering the few requests a host-network pod's worker makes (Services for
the environment, the status patch), and the fault is an exception raised from the worker's tick once its
container runs.
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from optimodel_localcluster.node_agent import runtime
from optimodel_localcluster.node_agent.agent import Agent
from optimodel_localcluster.node_agent.config import NodeAgentConfig
from optimodel_localcluster.node_agent.kubeapi import KubeApi
from optimodel_localcluster.node_agent.podworker import AgentContext, PodWorker

FAULT = "a fault nobody foresaw"


class _Api(http.server.BaseHTTPRequestHandler):
    """The API server as a host-network pod's worker needs it: no Services, and status patches recorded."""

    statuses: list[dict[str, Any]] = []
    pod: dict[str, Any] = {}

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0].endswith("/services"):
            self._answer(200, {"kind": "ServiceList", "items": []})
        else:
            self._answer(404, {"kind": "Status", "message": "not found", "code": 404})

    def do_PATCH(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).statuses.append(body["status"])
        self._answer(200, {**type(self).pod, "status": body["status"]})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[type[_Api]]:
    handler = type("Api", (_Api,), {"statuses": [], "pod": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }))
    try:
        yield handler
    finally:
        server.shutdown()


@pytest.fixture
def agent(tmp_path: Path, api: type[_Api]) -> Iterator[Agent]:
    """The agent as `run` sets it up, without the watch: the test hands it the pod's events itself."""
    config = NodeAgentConfig(cgroup_root=None)  # the host's cgroups are no business of a unit test
    node = config.nodes()[0]
    agent = Agent(tmp_path / "kubeconfig", tmp_path / "state", config)
    agent.api = KubeApi(tmp_path / "kubeconfig", timeout=5)
    agent.context = AgentContext(api=agent.api, config=config, state_dir=tmp_path / "state",
                                 nodes={node.name: node}, pod_cidrs={node.name: ipaddress.IPv4Network("10.244.1.0/24")})
    try:
        yield agent
    finally:
        agent.stop.set()
        agent._shutdown()
        agent.api.close()


def _pod(agent: Agent, uid: str) -> dict[str, Any]:
    assert agent.context is not None
    node = next(iter(agent.context.nodes))
    return {"metadata": {"namespace": "ns", "name": f"p-{uid}", "uid": uid, "resourceVersion": "1"},
            "spec": {"nodeName": node, "hostNetwork": True, "restartPolicy": "Always", "enableServiceLinks": False,
                     "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "300"]}]},
            "status": {"phase": "Pending"}}


def _until(probe: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s: {what}")


def _crash_once_running(monkeypatch: pytest.MonkeyPatch, times: int) -> list[PodWorker]:
    """Make each of the first `times` workers raise from its tick once its container runs; the crashed ones."""
    original = PodWorker._step
    crashed: list[PodWorker] = []

    def step(self: PodWorker) -> None:
        original(self)
        if len(crashed) < times and self not in crashed and self.containers[0].record.state == "running":
            crashed.append(self)
            raise RuntimeError(FAULT)

    monkeypatch.setattr(PodWorker, "_step", step)
    return crashed


def test_a_crashed_worker_is_logged_and_replaced_and_the_new_one_adopts_the_running_container(
    agent: Agent, api: type[_Api], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="optimodel_localcluster.node_agent")
    crashed = _crash_once_running(monkeypatch, times=2)
    pod = _pod(agent, "uid-restart")
    api.pod = pod
    agent._dispatch(pod)
    first = agent.workers["uid-restart"]
    _until(first.finished.is_set, 20, "the first worker crashed")
    assert crashed == [first] and first.crash is not None and f"RuntimeError: {FAULT}" in first.crash
    handle = first.containers[0].state.handle
    assert handle is not None and runtime.is_alive(handle), "the container outlives its worker"
    # Logged with the traceback, and the back-off is said.
    (report,) = _until(lambda: [r for r in caplog.records
                                if r.levelno == logging.ERROR and "ended on an exception" in r.getMessage()],
                       5, "the crash logged")
    assert "Traceback" in report.getMessage() and FAULT in report.getMessage() and "in 1 s" in report.getMessage()
    assert agent.workers["uid-restart"] is first, "not replaced before the back-off"

    second = _until(lambda: agent.workers["uid-restart"] if agent.workers["uid-restart"] is not first else None,
                    5, "a new worker after the back-off")
    _until(second.finished.is_set, 20, "the second worker crashed too")
    # The second worker took the pod over: the same process, not a restarted container.
    container = second.containers[0]
    assert container.state.handle is handle and container.popen is first.containers[0].popen
    assert container.record.state == "running" and container.record.restart_count == 0
    second_report = _until(lambda: [r.getMessage() for r in caplog.records
                                    if "ended on an exception (crash 2" in r.getMessage()], 5, "the second crash logged")
    assert "in 2 s" in second_report[0], "the back-off doubles"

    third = _until(lambda: agent.workers["uid-restart"] if agent.workers["uid-restart"] is not second else None,
                   6, "a third worker")
    time.sleep(3 * agent.config.sync_period_seconds)
    assert third.is_alive() and not third.finished.is_set(), "the third worker keeps running the pod"
    assert runtime.is_alive(handle) and third.containers[0].state.handle is handle
    published = api.statuses[-1]
    (status,) = published["containerStatuses"]
    assert published["phase"] == "Running" and status["restartCount"] == 0 and "running" in status["state"], published

    # A worker that ends as planned (its pod gone from the API) is not replaced, and stops the container.
    agent._gone(pod)
    _until(third.finished.is_set, 20, "the third worker stopped for the pod gone")
    assert third.crash is None
    _until(lambda: not runtime.is_alive(handle), 10, "the container stopped")
    time.sleep(1.5)
    assert agent.workers.get("uid-restart") in (None, third), "no new worker for a pod that is gone"
    assert sum("ended on an exception" in r.getMessage() for r in caplog.records) == 2


def test_a_pod_deleted_during_the_back_off_gets_no_new_worker_and_its_processes_are_stopped(
    agent: Agent, api: type[_Api], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _crash_once_running(monkeypatch, times=1)
    pod = _pod(agent, "uid-deleted")
    api.pod = pod
    agent._dispatch(pod)
    worker = agent.workers["uid-deleted"]
    _until(worker.finished.is_set, 20, "the worker crashed")
    handle = worker.containers[0].state.handle
    assert handle is not None and runtime.is_alive(handle)
    agent._gone(pod)  # the DELETED event, before the back-off ends
    _until(lambda: not runtime.is_alive(handle), 10, "the crashed worker's container stopped")
    assert not worker.dir.exists(), "the pod's folder is removed"
    time.sleep(1.5)
    assert "uid-deleted" not in agent.workers, "no new worker for a deleted pod"


def test_a_pod_that_finished_during_the_back_off_gets_no_new_worker(
    agent: Agent, api: type[_Api], monkeypatch: pytest.MonkeyPatch,
) -> None:
    _crash_once_running(monkeypatch, times=1)
    pod = _pod(agent, "uid-finished")
    api.pod = pod
    agent._dispatch(pod)
    worker = agent.workers["uid-finished"]
    _until(worker.finished.is_set, 20, "the worker crashed")
    handle = worker.containers[0].state.handle
    assert handle is not None and runtime.is_alive(handle)
    agent._dispatch({**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"}, "status": {"phase": "Failed"}})
    time.sleep(1.5)
    assert agent.workers["uid-finished"] is worker, "no new worker: a terminal pod is left as it is"
    _until(lambda: not runtime.is_alive(handle), 10, "the container the crashed worker left is stopped")
    assert worker.dir.exists(), "its folder (the logs) is kept"
