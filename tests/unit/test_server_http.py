"""The Open Inference Protocol over HTTP against the real app (real ONNX Runtime, real artifact),
including a fuzz of bad payloads that must never produce a 5xx, and a parsed /metrics scrape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _server_helpers import FEATURES, infer_body, make_client, sample_value, scrape
from optimodel_server.sample_artifact import write_sample_artifact

INFER = "/v2/models/mlp/infer"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("server-http")
    uri = write_sample_artifact(str(tmp / "store"), hidden=16)
    client, plane, registry = make_client(uri, tmp, revision="r7", pool="cpu", max_body_bytes=64 * 1024, drift_interval_s=60)
    yield client, plane, registry
    client.__exit__(None, None, None)


def test_health_and_metadata(served: tuple) -> None:
    client, plane, _ = served
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data"]
    meta = client.get("/v2/models/mlp").json()
    assert meta["name"] == "mlp" and meta["versions"] == ["r7"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, FEATURES]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["parameters"]["sha256"] == plane.loaded.manifest.sha256
    assert client.get("/v2/models/mlp/ready").json() == {"name": "mlp", "ready": True}
    assert client.get("/v2/models/mlp/versions/r7/ready").status_code == 200
    assert client.get("/v2/models/mlp/versions/r6/ready").status_code == 404
    assert client.get("/v2/models/other").status_code == 404


def test_infer_matches_onnx_runtime_directly(served: tuple) -> None:
    client, plane, _ = served
    body = infer_body(rows=3, seed=4)
    body["id"] = "abc"
    response = client.post(INFER, json=body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["model_name"] == "mlp" and doc["model_version"] == "r7" and doc["id"] == "abc"
    [output] = doc["outputs"]
    assert output["name"] == "logits" and output["shape"] == [3, 4] and output["datatype"] == "FP32"
    x = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(3, FEATURES)
    expected = plane.loaded.model.session.run(None, {"features": x})[0]
    np.testing.assert_allclose(np.asarray(output["data"]).reshape(3, 4), expected, rtol=1e-6)


def test_versioned_route_and_binary_extension(served: tuple) -> None:
    client, _, _ = served
    x = np.random.default_rng(1).standard_normal((2, FEATURES)).astype(np.float32)
    header = orjson.dumps({
        "inputs": [{"name": "features", "shape": [2, FEATURES], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}],
        "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
    })
    response = client.post(
        "/v2/models/mlp/versions/r7/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    json_length = int(response.headers["inference-header-content-length"])
    doc = json.loads(response.content[:json_length])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 2 * 4 * 4
    binary = np.frombuffer(response.content[json_length:], dtype=np.float32).reshape(2, 4)
    json_answer = client.post(INFER, json={"inputs": [{"name": "features", "shape": [2, FEATURES], "datatype": "FP32", "data": x.ravel().tolist()}]})
    np.testing.assert_allclose(binary, np.asarray(json_answer.json()["outputs"][0]["data"]).reshape(2, 4), rtol=1e-6)


@pytest.mark.parametrize(
    ("path", "payload", "status", "fragment"),
    [
        (INFER, b"{oops", 400, "not valid JSON"),
        (INFER, orjson.dumps({"inputs": [{"name": "features", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}), 400, "expects [-1, 64]"),
        (INFER, orjson.dumps({"inputs": [{"name": "features", "shape": [1, 64], "datatype": "FP64", "data": [0.0] * 64}]}), 400, "expects FP32"),
        (INFER, orjson.dumps({"inputs": [{"name": "wrong", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]}), 400, "missing input(s) ['features']"),
        (INFER, orjson.dumps({**infer_body(), "outputs": [{"name": "nope"}]}), 400, "unknown output(s) ['nope']"),
        ("/v2/models/other/infer", orjson.dumps(infer_body()), 404, "not served here"),
        ("/v2/models/mlp/versions/r1/infer", orjson.dumps(infer_body()), 404, "no version 'r1'"),
        (INFER, b"[" + b"1," * 40_000 + b"1]", 413, "exceeds the limit"),
    ],
)
def test_client_mistakes_get_4xx_with_a_reason(served: tuple, path: str, payload: bytes, status: int, fragment: str) -> None:
    client, _, _ = served
    response = client.post(path, content=payload, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]


def test_unknown_routes_and_methods_answer_json(served: tuple) -> None:
    client, _, _ = served
    assert client.get("/v3").status_code == 404 and "error" in client.get("/v3").json()
    response = client.get(INFER)
    assert response.status_code == 405 and "error" in response.json()


def test_chunked_body_over_the_limit_is_refused(served: tuple) -> None:
    client, _, _ = served

    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 1024

    response = client.post(INFER, content=chunks())
    assert response.status_code == 413


tensor_entry = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("features"), st.text(max_size=5), st.integers(), st.none()),
        "shape": st.one_of(st.lists(st.integers(-2, 70), max_size=3), st.just([1, 64]), st.text(max_size=3)),
        "datatype": st.one_of(st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "BYTES", "FP16", "UINT8", "fp32"]), st.integers()),
        "data": st.one_of(
            st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), max_size=70),
            st.lists(st.one_of(st.integers(-(2**70), 2**70), st.booleans(), st.text(max_size=2), st.none()), max_size=70),
            st.lists(st.lists(st.floats(-1e3, 1e3), max_size=65), max_size=3),
            st.just([0.5] * 64),
            st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
        ),
        "parameters": st.one_of(st.none(), st.dictionaries(st.sampled_from(["binary_data_size", "x"]), st.integers(-5, 300), max_size=1)),
    },
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


def _dumps(value: object) -> bytes:
    # The standard library writes what orjson refuses (huge integers, NaN): more to fuzz with.
    return json.dumps(value).encode()


payloads = st.one_of(
    st.binary(max_size=200),
    json_values.map(_dumps),
    st.fixed_dictionaries(
        {"inputs": st.one_of(st.lists(tensor_entry, max_size=3), json_values)},
        optional={"id": json_values, "outputs": st.one_of(json_values, st.lists(st.fixed_dictionaries({"name": st.text(max_size=7)})))},
    ).map(_dumps),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=payloads, binary_header=st.one_of(st.none(), st.integers(-3, 300).map(str), st.just("x")))
def test_fuzzed_payloads_never_get_a_5xx(served: tuple, payload: bytes, binary_header: str | None) -> None:
    client, plane, _ = served
    headers = {"Content-Type": "application/json"}
    if binary_header is not None:
        headers["Inference-Header-Content-Length"] = binary_header
    response = client.post(INFER, content=payload, headers=headers)
    assert response.status_code < 500, (payload, response.text)
    if response.status_code != 200:
        error = response.json()["error"]
        assert isinstance(error, str) and error
    assert plane.ready


def test_metrics_are_scraped_and_parsed(served: tuple) -> None:
    client, _, _ = served
    before = scrape(client)
    base = {"model": "mlp", "revision": "r7", "pool": "cpu"}
    ok_before = sample_value(before, "optimodel_requests_total", code="200", **base)
    assert client.post(INFER, json=infer_body()).status_code == 200
    assert client.post(INFER, content=b"nope").status_code == 400
    after = scrape(client)
    assert sample_value(after, "optimodel_requests_total", code="200", **base) == ok_before + 1
    assert sample_value(after, "optimodel_request_errors_total", code="400", reason="invalid_input", **base) >= 1
    assert sample_value(after, "optimodel_request_duration_seconds_count", **base) >= 2
    # Buckets from 100 µs up to seconds.
    bounds = {s.labels["le"] for s in after["optimodel_request_duration_seconds"] if s.name.endswith("_bucket")}
    assert {"0.0001", "0.00025", "0.001", "1.0", "10.0", "+Inf"} <= bounds
    assert sample_value(after, "optimodel_model_ready", **base) == 1
    assert sample_value(after, "optimodel_model_load_seconds", **base) > 0
    assert sample_value(after, "optimodel_inflight_requests", **base) == 0
    assert sample_value(after, "optimodel_queue_depth", **base) == 0
    assert sample_value(after, "optimodel_batch_size_count", **base) >= 1
    info = [s for samples in after.values() for s in samples if s.name == "optimodel_revision_info"]
    assert info and info[0].labels["variant"] == "mlp" and info[0].labels["provider"] == "cpu"
    assert len(info[0].labels["sha256"]) == 64


def test_while_stopping_it_is_not_ready_but_still_answers(tmp_path: Path) -> None:
    # Between SIGTERM and the listener closing (the shutdown delay) kube-proxy may still route here: those
    # requests are answered, not refused with a 503 that would count against the revision's error rate.
    uri = write_sample_artifact(str(tmp_path / "store"), hidden=8)
    client, plane, _ = make_client(uri, tmp_path, drift_interval_s=60)
    try:
        plane.begin_shutdown()
        assert client.get("/v2/health/ready").status_code == 503
        answer = client.post(INFER, json=infer_body(rows=2))
        assert answer.status_code == 200, answer.text
    finally:
        client.__exit__(None, None, None)
