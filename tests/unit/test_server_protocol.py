"""The OIP v2 codec and the input checks, as pure functions: what is accepted, what is refused and why."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from optimodel_server.errors import InvalidInput, http_status_for
from optimodel_server.model import TensorSignature, check_inputs
from optimodel_server.protocol import decode_infer_request, encode_infer_response


def _body(**overrides) -> bytes:
    tensor = {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2.5, 3, 4]}
    tensor.update(overrides)
    return orjson.dumps({"inputs": [tensor]})


def test_json_tensor_decodes_to_its_shape_and_dtype() -> None:
    request = decode_infer_request(_body())
    array = request.inputs["x"]
    assert array.dtype == np.float32 and array.shape == (2, 2)
    assert array.tolist() == [[1.0, 2.5], [3.0, 4.0]]


def test_nested_data_is_accepted_row_major() -> None:
    request = decode_infer_request(_body(data=[[1, 2], [3, 4]]))
    assert request.inputs["x"].tolist() == [[1, 2], [3, 4]]


def test_ids_outputs_and_binary_flags_are_kept() -> None:
    body = orjson.dumps({
        "id": "req-7",
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [3]}],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
    })
    request = decode_infer_request(body)
    assert request.request_id == "req-7"
    assert request.output_names == ["y", "z"]
    assert request.binary_outputs == {"y"}
    assert request.inputs["x"].dtype == np.int64


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"", "empty"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "'inputs' must be a non-empty list"),
        (b'{"inputs": []}', "'inputs' must be a non-empty list"),
        (b'{"inputs": [5]}', "inputs[0] must be an object"),
        (b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}', "'name' must be a non-empty string"),
        (_body(datatype="FLOAT"), "'datatype' must be one of"),
        (_body(datatype="BYTES"), "'datatype' must be one of"),
        (_body(shape=[2, -2]), "non-negative integers"),
        (_body(shape=[2, True]), "non-negative integers"),
        (_body(shape="2x2"), "'shape' must be a list"),
        (_body(data=[1, 2, 3]), "has 3 values but shape [2, 2] needs 4"),
        (_body(data=[1, 2, 3, "4"]), "needs numbers, got strings"),
        (_body(data=[[1, 2], [3]]), "not a regular array"),
        (_body(data=[1, 2, 3, None]), "needs numbers"),
        (_body(data=[True, False, True, False]), "needs numbers, got booleans"),
        (_body(data=[1, 2, 3, 1e300]), "too large for FP32"),
        (_body(data="1,2,3,4"), "'data' must be a list"),
        (_body(datatype="INT64", data=[1, 2, 3, 4.5]), "needs integers, got fractional"),
        (_body(datatype="INT8", data=[1, 2, 3, 400]), "outside the range of INT8"),
        (_body(datatype="BOOL", data=[1, 0, 1, 0]), "BOOL needs true/false"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}), "has no 'data'"),
        (orjson.dumps({"id": 5, "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}), "'id' must be a string"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}] * 2}), "more than once"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": {}}), "'outputs' must be a list"),
        (orjson.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}], "outputs": [{"name": ""}]}), "non-empty string 'name'"),
    ],
)
def test_malformed_requests_are_refused_with_a_specific_message(body: bytes, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        decode_infer_request(body)
    assert fragment in caught.value.message
    assert http_status_for(caught.value) == 400


def test_binary_extension_round_trip() -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]})
    request = decode_infer_request(header + array.tobytes(), json_length=len(header))
    np.testing.assert_array_equal(request.inputs["x"], array)

    body, json_length = encode_infer_response("m", "1", None, {"y": array}, all_binary=True)
    assert json_length is not None
    doc = orjson.loads(body[:json_length])
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 24
    np.testing.assert_array_equal(np.frombuffer(body[json_length:], dtype=np.float32).reshape(2, 3), array)


@pytest.mark.parametrize(
    ("json_length_delta", "binary", "fragment"),
    [
        (None, b"", "no Inference-Header-Content-Length"),
        (0, b"\x00" * 20, "runs past the end"),
        (0, b"\x00" * 28, "no input claims"),
        (10_000, b"\x00" * 24, "but the body has only"),
    ],
)
def test_bad_binary_payloads_are_refused(json_length_delta: int | None, binary: bytes, fragment: str) -> None:
    header = orjson.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": 24}}]})
    json_length = None if json_length_delta is None else len(header) + json_length_delta
    with pytest.raises(InvalidInput) as caught:
        decode_infer_request(header + binary, json_length=json_length)
    assert fragment in caught.value.message


def test_json_response_carries_flat_data_shape_and_datatype() -> None:
    body, json_length = encode_infer_response("m", "3", "abc", {"y": np.array([[1.5, 2.0]], dtype=np.float32)})
    assert json_length is None
    assert orjson.loads(body) == {
        "model_name": "m", "model_version": "3", "id": "abc",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]}],
    }


SIGNATURES = {"x": TensorSignature("x", np.dtype(np.float32), (None, 4))}


@pytest.mark.parametrize(
    ("inputs", "fragment"),
    [
        ({}, "missing input(s) ['x']"),
        ({"x": np.zeros((1, 4), np.float32), "extra": np.zeros(1, np.float32)}, "unknown input 'extra'"),
        ({"x": np.zeros((1, 4), np.float64)}, "datatype FP64 but the model expects FP32"),
        ({"x": np.zeros((1, 5), np.float32)}, "shape [1, 5] but the model expects [-1, 4]"),
        ({"x": np.zeros((4,), np.float32)}, "shape [4] but the model expects [-1, 4]"),
        ({"x": np.zeros((0, 4), np.float32)}, "holds no values"),
    ],
)
def test_inputs_that_do_not_fit_the_model_are_refused(inputs: dict, fragment: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_inputs(SIGNATURES, inputs)
    assert fragment in caught.value.message


def test_fitting_inputs_pass_with_any_batch_size() -> None:
    check_inputs(SIGNATURES, {"x": np.zeros((7, 4), np.float32)})
