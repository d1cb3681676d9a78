"""Probe thresholds and timing (pure), and real httpGet/tcpSocket checks against a local server."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator

import pytest

from optimodel_localcluster.node_agent.probes import ProbeSpec, ProbeTracker, resolve_port, run_probe


def spec(**overrides: float) -> ProbeSpec:
    return ProbeSpec.from_json({"httpGet": {"port": 80}, "periodSeconds": 5, "initialDelaySeconds": 3,
                                "failureThreshold": 2, "successThreshold": 2, **overrides})


def test_spec_defaults_follow_kubernetes() -> None:
    defaults = ProbeSpec.from_json({"tcpSocket": {"port": 1}})
    assert (defaults.period, defaults.timeout, defaults.success_threshold, defaults.failure_threshold,
            defaults.initial_delay) == (10, 1, 1, 3, 0)
    assert defaults.action == {"tcpSocket": {"port": 1}}


def test_due_respects_initial_delay_and_period() -> None:
    tracker = ProbeTracker.start("readiness", spec(), now=100.0)
    assert not tracker.due(102.9)
    assert tracker.due(103.0)
    tracker.record(True, 103.0)
    assert not tracker.due(107.9)
    assert tracker.due(108.0)


def test_readiness_needs_success_threshold_and_falls_after_failure_threshold() -> None:
    tracker = ProbeTracker.start("readiness", spec(), now=0.0)
    assert tracker.passing is False
    assert tracker.record(True, 1) is False
    assert tracker.record(True, 2) is True and tracker.passing
    assert tracker.record(False, 3) is False and tracker.passing
    assert tracker.record(False, 4) is True and not tracker.passing
    assert not tracker.failed_for_good()  # readiness never restarts a container


def test_liveness_starts_passing_and_fails_for_good_at_threshold() -> None:
    tracker = ProbeTracker.start("liveness", spec(), now=0.0)
    assert tracker.passing
    tracker.record(False, 1)
    assert not tracker.failed_for_good()
    tracker.record(False, 2)
    assert tracker.failed_for_good()


def test_resolve_named_port() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert resolve_port("http", container) == 8080
    assert resolve_port(9090, container) == 9090
    with pytest.raises(ValueError, match="'metrics'"):
        resolve_port("metrics", container)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()


def test_http_and_tcp_probes_against_a_real_server(server: int) -> None:
    container = {"ports": [{"name": "web", "containerPort": server}]}
    ok, _ = run_probe({"httpGet": {"path": "/ok", "port": "web"}}, pod_ip="127.0.0.1", container=container,
                      timeout=2, exec_pid=None)
    assert ok
    ok, message = run_probe({"httpGet": {"path": "/bad", "port": server}}, pod_ip="127.0.0.1", container=container,
                            timeout=2, exec_pid=None)
    assert not ok and "503" in message
    assert run_probe({"tcpSocket": {"port": server}}, pod_ip="127.0.0.1", container={}, timeout=2, exec_pid=None)[0]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
    ok, message = run_probe({"tcpSocket": {"port": free_port}}, pod_ip="127.0.0.1", container={}, timeout=2,
                            exec_pid=None)
    assert not ok and message


def test_exec_probe_without_a_process_fails_clearly() -> None:
    ok, message = run_probe({"exec": {"command": ["true"]}}, pod_ip="127.0.0.1", container={}, timeout=1,
                            exec_pid=None)
    assert not ok and message == "container process not known"
