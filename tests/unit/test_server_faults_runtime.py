"""Runtime fault control (``--fault-control``): GET/PUT /v2/faults on a running server, against the real
app (real ONNX Runtime, real artifact) and once in the real process; off by default (404)."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from _server_helpers import FEATURES, infer_body, make_client, sample_value, scrape
from optimodel_server.config import FaultConfig
from optimodel_server.errors import InvalidInput
from optimodel_server.faults import FaultInjector, fault_wire, parse_fault_update
from optimodel_server.sample_artifact import write_sample_artifact

INFER = "/v2/models/mlp/infer"
FAULTS = "/v2/faults"
BASE = {"model": "mlp", "revision": "r3", "pool": "cpu"}
# Startup faults: small, so requests stay fast, but not the defaults, so GET shows they came from the flags.
STARTUP = {"latencyMs": 1.0, "errorRatio": 0.0, "inputShift": 0.5, "outputBias": 0.0}


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("server-faults-runtime")
    return tmp, write_sample_artifact(str(tmp / "store"), hidden=16)


@pytest.fixture(scope="module")
def served(artifact: tuple[Path, str]) -> Iterator[tuple]:
    tmp, uri = artifact
    client, plane, registry = make_client(
        uri, tmp / "on", revision="r3", pool="cpu", drift_interval_s=60, fault_control=True,
        faults={"added_latency_ms": 1.0, "input_shift": 0.5},
    )
    yield client, plane, registry
    client.__exit__(None, None, None)


@pytest.fixture
def on(served: tuple) -> Iterator[tuple]:
    """The server with runtime control on, put back to its startup faults after each test."""
    yield served
    client = served[0]
    assert client.put(FAULTS, json=STARTUP).status_code == 200


def _model(plane, x: np.ndarray) -> np.ndarray:  # noqa: ANN001
    return plane.loaded.model.session.run(None, {"features": x})[0]


def _count(families: dict[str, list], name: str, **labels: str) -> float:
    """A counter's value, 0 for a labelled series not created yet (errors appear with the first one)."""
    try:
        return sample_value(families, name, **labels, **BASE)
    except KeyError:
        return 0.0


def _logits(response: httpx.Response, rows: int) -> np.ndarray:
    return np.asarray(response.json()["outputs"][0]["data"], dtype=np.float32).reshape(rows, 4)


# ---- off by default ------------------------------------------------------------------------------


def test_fault_control_is_off_by_default_and_its_routes_do_not_exist(artifact: tuple[Path, str]) -> None:
    tmp, uri = artifact
    # Faults set at startup, control not asked for: the startup faults apply, the routes are absent.
    client, plane, _ = make_client(uri, tmp / "off", drift_interval_s=60, faults={"input_shift": 0.5})
    try:
        assert plane.config.fault_control is False
        unknown = client.get("/v2/no-such-route")
        for response in (client.get(FAULTS), client.put(FAULTS, json={"errorRatio": 1})):
            assert response.status_code == 404
            assert response.json() == unknown.json()
        assert client.post(INFER, json=infer_body()).status_code == 200
        assert plane.faults.config == FaultConfig(input_shift=0.5)
    finally:
        client.__exit__(None, None, None)


def test_cli_flag_and_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    import optimodel_server.server as server_module
    from optimodel_server import cli

    seen = []
    monkeypatch.setattr(server_module, "serve", seen.append)
    monkeypatch.delenv("OPTIMODEL_SERVER_FAULT_CONTROL", raising=False)
    runner = CliRunner()
    app = typer.Typer(add_completion=False)
    app.command()(cli.serve)
    for args, env, expected in [
        ([], {}, False),
        (["--fault-control"], {}, True),
        (["--no-fault-control"], {"OPTIMODEL_SERVER_FAULT_CONTROL": "true"}, False),
        ([], {"OPTIMODEL_SERVER_FAULT_CONTROL": "true"}, True),
        ([], {"OPTIMODEL_SERVER_FAULT_CONTROL": "0"}, False),
    ]:
        result = runner.invoke(app, ["--manifest", "m.json", "--fault-latency-ms", "3", *args], env=env)
        assert result.exit_code == 0, result.output
        assert seen[-1].fault_control is expected, (args, env)
        assert seen[-1].faults.added_latency_ms == 3  # startup flags still set the initial faults


# ---- on: the HTTP routes -------------------------------------------------------------------------


def test_get_shows_the_startup_faults(on: tuple) -> None:
    client, _, _ = on
    response = client.get(FAULTS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == STARTUP


def test_put_latency_delays_the_next_inference_requests(on: tuple) -> None:
    client, _, _ = on
    body = infer_body(rows=2, seed=1)
    baseline = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.post(INFER, json=body).status_code == 200
        baseline.append(time.perf_counter() - started)
    before = scrape(client)

    response = client.put(FAULTS, json={"latencyMs": 200})
    assert response.status_code == 200
    assert response.json() == {**STARTUP, "latencyMs": 200.0}  # the other keys are kept
    assert client.get(FAULTS).json() == response.json()

    started = time.perf_counter()
    assert client.post(INFER, json=body).status_code == 200
    added = time.perf_counter() - started - min(baseline)
    # Lower bound only: a busy machine may add more, never less.
    assert added >= 0.19, f"added delay {added:.3f} s"
    after = scrape(client)
    assert sample_value(after, "optimodel_faults_injected_total", kind="latency", **BASE) == (
        sample_value(before, "optimodel_faults_injected_total", kind="latency", **BASE) + 1
    )


def test_put_error_ratio_one_fails_requests_and_counts_them_then_zeros_restore_service(on: tuple) -> None:
    client, plane, _ = on
    before = scrape(client)
    assert client.put(FAULTS, json={"errorRatio": 1}).json()["errorRatio"] == 1.0
    response = client.post(INFER, json=infer_body())
    assert response.status_code == 500
    assert "injected fault" in response.json()["error"]
    after = scrape(client)
    for name, labels in [
        ("optimodel_request_errors_total", {"code": "500", "reason": "injected_fault"}),
        ("optimodel_requests_total", {"code": "500"}),
        ("optimodel_faults_injected_total", {"kind": "error"}),
    ]:
        assert _count(after, name, **labels) == _count(before, name, **labels) + 1, name

    zeros = {"latencyMs": 0, "errorRatio": 0, "inputShift": 0, "outputBias": 0}
    response = client.put(FAULTS, json=zeros)
    assert response.status_code == 200 and response.json() == zeros
    assert plane.faults.enabled is False
    body = infer_body(rows=2, seed=7)
    response = client.post(INFER, json=body)
    assert response.status_code == 200, response.text
    # No shift any more: the answer is the model's on the inputs as sent.
    x = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(2, FEATURES)
    np.testing.assert_allclose(_logits(response, 2), _model(plane, x), rtol=1e-6)


def test_put_input_shift_shifts_inputs_from_now_on(on: tuple) -> None:
    client, plane, _ = on
    assert client.put(FAULTS, json={"latencyMs": 0, "inputShift": -2.0}).status_code == 200
    body = infer_body(rows=3, seed=2)
    response = client.post(INFER, json=body)
    x = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(3, FEATURES)
    np.testing.assert_allclose(_logits(response, 3), _model(plane, x + np.float32(-2.0)), rtol=1e-6)


def test_a_request_in_flight_keeps_the_settings_it_started_with(on: tuple) -> None:
    """Old or new, never a mix: a request sleeping on the old latency is shifted by the old shift."""
    client, plane, registry = on
    assert client.put(FAULTS, json={"latencyMs": 400, "inputShift": 3.0}).status_code == 200
    body = infer_body(rows=1, seed=3)
    labels = {"kind": "latency", **BASE}
    delayed = registry.get_sample_value("optimodel_faults_injected_total", labels)
    answers: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: answers.append(client.post(INFER, json=body)))
    worker.start()
    # Change the settings once the request has decided (it counts its delay just after), while it sleeps.
    deadline = time.monotonic() + 5
    while registry.get_sample_value("optimodel_faults_injected_total", labels) == delayed and time.monotonic() < deadline:
        time.sleep(0.005)
    assert registry.get_sample_value("optimodel_faults_injected_total", labels) == delayed + 1
    assert client.put(FAULTS, json={"latencyMs": 0, "inputShift": 0}).status_code == 200
    worker.join(10)
    [response] = answers
    x = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(1, FEATURES)
    np.testing.assert_allclose(_logits(response, 1), _model(plane, x + np.float32(3.0)), rtol=1e-6)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b'{"latencyMs": -1}', "latencyMs must be between 0 and 600000"),
        (b'{"latencyMs": 600001}', "latencyMs must be between 0 and 600000"),
        (b'{"latencyMs": "200"}', "latencyMs must be a number"),
        (b'{"latencyMs": true}', "latencyMs must be a number"),
        (b'{"errorRatio": 1.5}', "errorRatio must be between 0 and 1"),
        (b'{"errorRatio": -0.1}', "errorRatio must be between 0 and 1"),
        (b'{"errorRatio": null}', "errorRatio must be a number"),
        (b'{"inputShift": 1e400}', "inputShift must be finite"),
        (b'{"inputShift": NaN}', "inputShift must be finite"),
        (b'{"latencyMs": Infinity}', "latencyMs must be finite"),
        (b'{"errorRatio": NaN}', "errorRatio must be finite"),
        (b'{"latencyMs": {"a": 1}}', "latencyMs must be a number"),
        (b"\xff\xfe", "body is not valid JSON"),
        (b'{"inputShift": [1]}', "inputShift must be a number"),
        (b'{"errorRatio": 0.5, "seed": 3}', "unknown field 'seed'"),
        (b'{"latency_ms": 3}', "unknown field 'latency_ms'"),
        (b"[1, 2]", "body must be a JSON object"),
        (b"not json", "body is not valid JSON"),
        (b"", "body is not valid JSON"),
    ],
)
def test_bad_bodies_are_refused_naming_the_field_and_change_nothing(on: tuple, payload: bytes, fragment: str) -> None:
    client, plane, _ = on
    # Nothing of a refused body is applied, not even its valid keys.
    response = client.put(FAULTS, content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]
    assert client.get(FAULTS).json() == STARTUP


def test_each_change_is_logged_old_to_new(on: tuple, caplog: pytest.LogCaptureFixture) -> None:
    client, _, _ = on
    with caplog.at_level(logging.INFO, logger="optimodel_server"):
        assert client.put(FAULTS, json={"errorRatio": 0.25}).status_code == 200
    [record] = [r for r in caplog.records if "fault injection changed" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "fault injection changed: {'latencyMs': 1.0, 'errorRatio': 0.0, 'inputShift': 0.5, 'outputBias': 0.0}"
        " -> {'latencyMs': 1.0, 'errorRatio': 0.25, 'inputShift': 0.5, 'outputBias': 0.0}"
    )


def test_other_methods_on_the_route_answer_405(on: tuple) -> None:
    client, _, _ = on
    assert client.post(FAULTS, json={}).status_code == 405


# ---- pure decisions --------------------------------------------------------------------------------


def test_reconfigure_replaces_the_config_whole_and_keeps_the_random_source() -> None:
    injector = FaultInjector(FaultConfig(), rng=random.Random(5))
    assert not injector.enabled and injector.decide().fail is False
    old = injector.reconfigure(FaultConfig(error_ratio=1.0, added_latency_ms=7, input_shift=0.5))
    assert old == FaultConfig()
    assert injector.enabled
    decision = injector.decide()
    assert (decision.fail, decision.delay_s, decision.input_shift) == (True, 0.007, 0.5)
    injector.reconfigure(FaultConfig())
    assert not injector.enabled and injector.decide() == injector.decide()

    # The same seed gives the same draws whether or not the config changed in between.
    a, b = FaultInjector(FaultConfig(error_ratio=0.5), rng=random.Random(1)), FaultInjector(FaultConfig(error_ratio=0.5), rng=random.Random(1))
    first = [a.decide().fail for _ in range(10)]
    b.reconfigure(FaultConfig(error_ratio=0.5, added_latency_ms=1))
    assert [b.decide().fail for _ in range(10)] == first


def test_a_failed_update_changes_nothing() -> None:
    injector = FaultInjector(FaultConfig(input_shift=1.0))
    with pytest.raises(InvalidInput, match="errorRatio"):
        injector.update(lambda current: parse_fault_update(b'{"inputShift": 2, "errorRatio": 2}', current))
    assert injector.config == FaultConfig(input_shift=1.0)


def test_parse_fault_update_merges_a_subset_and_keeps_the_seed() -> None:
    current = FaultConfig(added_latency_ms=5, error_ratio=0.1, input_shift=1.0, seed=9)
    assert parse_fault_update(b"{}", current) == current
    updated = parse_fault_update(b'{"errorRatio": 0, "latencyMs": 600000}', current)
    assert updated == FaultConfig(added_latency_ms=600_000, error_ratio=0, input_shift=1.0, seed=9)
    assert fault_wire(updated) == {"latencyMs": 600000.0, "errorRatio": 0.0, "inputShift": 1.0, "outputBias": 0.0}
    # One bound for startup flags and runtime changes; non-finite values are refused at startup too.
    with pytest.raises(ValueError):
        FaultConfig(added_latency_ms=600_001)
    with pytest.raises(ValueError):
        FaultConfig(input_shift=float("nan"))


# ---- the real process --------------------------------------------------------------------------------


def test_real_process_takes_the_control_from_its_environment_and_logs_changes(artifact: tuple[Path, str]) -> None:
    tmp, uri = artifact
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "optimodel_server", "--manifest", uri, "--host", "127.0.0.1", "--port", str(port),
         "--cache-dir", str(tmp / "process-cache"), "--revision", "r9"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "OPTIMODEL_SERVER_FAULT_CONTROL": "true"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the server exited early"
            assert time.monotonic() < deadline, "the server never became ready"
            try:
                if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get(FAULTS).json() == {"latencyMs": 0.0, "errorRatio": 0.0, "inputShift": 0.0, "outputBias": 0.0}
            assert http.post(INFER, json=infer_body()).status_code == 200
            assert http.put(FAULTS, json={"errorRatio": 1}).status_code == 200
            assert http.post(INFER, json=infer_body()).status_code == 500
            assert http.put(FAULTS, json={"errorRatio": 0}).status_code == 200
            assert http.post(INFER, json=infer_body()).status_code == 200
            metrics = http.get("/metrics").text
        assert 'optimodel_request_errors_total{code="500",model="mlp",pool="default",reason="injected_fault",revision="r9"} 1.0' in metrics
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
    assert "FAULT CONTROL IS ON" in output
    assert "fault injection changed: {'latencyMs': 0.0, 'errorRatio': 0.0, 'inputShift': 0.0, 'outputBias': 0.0} -> " \
           "{'latencyMs': 0.0, 'errorRatio': 1.0, 'inputShift': 0.0, 'outputBias': 0.0}" in output


def test_an_output_bias_moves_the_predicted_classes_to_the_first() -> None:
    from optimodel_server.faults import bias_outputs

    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]], dtype=np.float32)
    biased = bias_outputs({"logits": scores, "ids": np.array([1, 2])}, 5.0)
    assert biased["logits"].argmax(axis=1).tolist() == [0, 0]
    assert scores.argmax(axis=1).tolist() == [1, 0], "the model's own outputs are not changed in place"
    assert biased["ids"].tolist() == [1, 2], "non-float outputs are left alone"
    assert parse_fault_update(b'{"outputBias": 3}', FaultConfig()).output_bias == 3.0
