"""The real server process (uvicorn, httptools, uvloop) on loopback: serving, faults, and graceful
shutdown (readiness off, in-flight requests finish, exit 0)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from _server_helpers import infer_body
from optimodel_server.sample_artifact import write_sample_artifact


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tmp: Path, uri: str, *flags: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "optimodel_server", "--manifest", uri, "--host", "127.0.0.1", "--port", str(port),
         "--cache-dir", str(tmp / "cache"), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited early:\n{process.stdout.read()}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise AssertionError(f"server never became ready:\n{process.stdout.read()}")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    tmp = tmp_path_factory.mktemp("server-process")
    yield tmp, write_sample_artifact(str(tmp / "store"), hidden=16)


def test_sigterm_turns_readiness_off_drains_in_flight_requests_and_exits_cleanly(artifact: tuple) -> None:
    tmp, uri = artifact
    # Flags by environment: the added latency keeps a request in flight while SIGTERM arrives.
    process, base = _start(
        tmp, uri, "--shutdown-delay-s", "0.5",
        env={"OPTIMODEL_SERVER_FAULT_LATENCY_MS": "700", "OPTIMODEL_SERVER_REVISION": "r2"},
    )
    answers: list[httpx.Response] = []
    with httpx.Client(timeout=10) as client:
        worker = threading.Thread(target=lambda: answers.append(client.post(f"{base}/v2/models/mlp/infer", json=infer_body())))
        worker.start()
        time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        # During the shutdown delay the listener is still open but readiness is already false.
        ready = httpx.get(f"{base}/v2/health/ready", timeout=2)
        assert ready.status_code == 503 and ready.json()["state"] == "Stopping"
        assert httpx.get(f"{base}/v2/health/live", timeout=2).status_code == 200
        worker.join(10)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["model_version"] == "r2"
    assert process.wait(15) == 0
    log = process.stdout.read()
    assert "FAULT INJECTION IS ON" in log and "readiness false" in log


def test_injected_errors_are_500s_counted_by_code(artifact: tuple) -> None:
    tmp, uri = artifact
    process, base = _start(tmp, uri, "--fault-error-ratio", "1.0", "--pool", "gpu")
    try:
        response = httpx.post(f"{base}/v2/models/mlp/infer", json=infer_body(), timeout=5)
        assert response.status_code == 500 and "injected fault" in response.json()["error"]
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'optimodel_request_errors_total{code="500",model="mlp",pool="gpu",reason="injected_fault",revision="0"} 1.0' in metrics
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0


def test_bad_flags_are_refused_with_the_field_named() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "optimodel_server", "--manifest", "x", "--max-batch-size", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "max_batch_size" in result.stderr


def test_optimodel_serve_is_registered_in_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "optimodel_operator.cli", "serve", "--help"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "300"},
    )
    assert result.returncode == 0, result.stderr
    assert "--manifest" in result.stdout and "OPTIMODEL_SERVER_MANIFEST" in result.stdout


def test_requests_beyond_max_inflight_are_answered_429_at_once(artifact: tuple) -> None:
    tmp, uri = artifact
    process, base = _start(tmp, uri, "--max-inflight", "1", "--fault-latency-ms", "800")
    try:
        answers: list[httpx.Response] = []
        slow = threading.Thread(target=lambda: answers.append(httpx.post(f"{base}/v2/models/mlp/infer", json=infer_body(), timeout=10)))
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        refused = httpx.post(f"{base}/v2/models/mlp/infer", json=infer_body(), timeout=10)
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert "already in flight" in refused.json()["error"]
        assert time.monotonic() - started < 0.5, "overload must be answered at once"
        slow.join(10)
        assert answers[0].status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
