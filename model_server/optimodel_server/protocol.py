"""The Open Inference Protocol (v2) wire codec: request bodies to numpy arrays, arrays to response bodies.

JSON tensors and the binary-tensor-data extension (``Inference-Header-Content-Length``). The checks are
written by hand rather than through a pydantic model: this is the hot path, and hand checks cost a few
microseconds where a validated model costs tens (see docs/model-server.md). Every rejection is an
:class:`InvalidInput` whose message names the field and says what is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .errors import InvalidInput

# OIP datatype <-> numpy dtype. BYTES (strings) is not served: our artifacts are numeric ONNX models.
DATATYPE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NUMPY_TO_DATATYPE: dict[np.dtype, str] = {v: k for k, v in DATATYPE_TO_NUMPY.items()}
_DATATYPE_LIST = ", ".join(DATATYPE_TO_NUMPY)
BINARY_HEADER = "inference-header-content-length"


def datatype_of(dtype: np.dtype | str) -> str:
    """The OIP datatype name of a numpy dtype (or numpy dtype name such as "float32")."""
    try:
        return NUMPY_TO_DATATYPE[np.dtype(dtype)]
    except (KeyError, TypeError) as error:
        raise ValueError(f"dtype {dtype!r} has no Open Inference Protocol datatype") from error


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request: named arrays (already in their declared shape and dtype)."""

    inputs: dict[str, np.ndarray]
    request_id: str | None = None
    output_names: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)
    all_binary: bool = False


def _fail(message: str) -> InvalidInput:
    return InvalidInput(message)


def _check_shape(shape: Any, where: str) -> list[int]:
    if type(shape) is not list:
        raise _fail(f"{where}: 'shape' must be a list of non-negative integers, got {type(shape).__name__}")
    for dim in shape:
        # bool is an int subclass in Python; `type(...) is int` keeps `true` out of a shape.
        if type(dim) is not int or dim < 0:
            raise _fail(f"{where}: 'shape' must be a list of non-negative integers, got {shape!r}")
    return shape


def _array_from_json(data: Any, dtype: np.dtype, where: str) -> np.ndarray:
    if type(data) is not list:
        raise _fail(f"{where}: 'data' must be a list (flat or nested, row-major), got {type(data).__name__}")
    try:
        # Converted without a dtype first so that strings, booleans and fractions are caught instead of
        # silently cast (np.asarray(["1"], dtype=float32) would accept a string).
        raw = np.asarray(data)
    except (ValueError, TypeError, OverflowError) as error:
        raise _fail(f"{where}: 'data' is not a regular array of numbers ({error})") from error
    kind = raw.dtype.kind
    target = dtype.kind
    if raw.size == 0:
        return np.empty(0, dtype=dtype)
    if target == "b":
        if kind != "b":
            raise _fail(f"{where}: datatype BOOL needs true/false values, got {_describe(kind)}")
        return raw.ravel()
    if kind not in "iuf" or (target in "iu" and kind == "f"):
        expected = "integers" if target in "iu" else "numbers"
        raise _fail(f"{where}: datatype {NUMPY_TO_DATATYPE[dtype]} needs {expected}, got {_describe(kind)}")
    if target in "iu":
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise _fail(f"{where}: values outside the range of {NUMPY_TO_DATATYPE[dtype]} ({info.min}..{info.max})")
        return raw.astype(dtype, copy=False).ravel()
    with np.errstate(over="ignore"):
        array = raw.astype(dtype, copy=False).ravel()
    if not np.isfinite(array).all():
        raise _fail(f"{where}: values too large for {NUMPY_TO_DATATYPE[dtype]}")
    return array


def _describe(kind: str) -> str:
    return {
        "b": "booleans", "U": "strings", "S": "strings", "O": "mixed or nested values of uneven length",
        "f": "fractional numbers", "i": "integers", "u": "integers",
    }.get(kind, f"values of kind {kind!r}")


def decode_infer_request(body: bytes, json_length: int | None = None) -> InferRequest:
    """Decode an OIP v2 inference request body.

    ``json_length`` is the ``Inference-Header-Content-Length`` header of the binary extension: the
    first ``json_length`` bytes are the JSON header, the rest are the binary tensors in input order.
    """
    if json_length is not None:
        if json_length < 0 or json_length > len(body):
            raise _fail(
                f"Inference-Header-Content-Length is {json_length} but the body has only {len(body)} bytes"
            )
        header_bytes = body[:json_length]
        binary = memoryview(body)[json_length:]
    else:
        header_bytes = body
        binary = None
    if not header_bytes:
        raise _fail("request body is empty; expected a JSON object with 'inputs'")
    try:
        doc = orjson.loads(header_bytes)
    except orjson.JSONDecodeError as error:
        raise _fail(f"request body is not valid JSON: {error}") from error
    if type(doc) is not dict:
        raise _fail(f"request body must be a JSON object, got {type(doc).__name__}")
    inputs = doc.get("inputs")
    if type(inputs) is not list or not inputs:
        raise _fail("'inputs' must be a non-empty list of tensors")

    request_id = doc.get("id")
    if request_id is not None and type(request_id) is not str:
        raise _fail("'id' must be a string")
    params = doc.get("parameters")
    if params is not None and type(params) is not dict:
        raise _fail("'parameters' must be an object")
    all_binary = False
    if params:
        flag = params.get("binary_data_output", False)
        if type(flag) is not bool:
            raise _fail("parameters.binary_data_output must be true or false")
        all_binary = flag

    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for position, item in enumerate(inputs):
        where = f"inputs[{position}]"
        if type(item) is not dict:
            raise _fail(f"{where} must be an object with name, shape, datatype and data")
        name = item.get("name")
        if type(name) is not str or not name:
            raise _fail(f"{where}: 'name' must be a non-empty string")
        where = f"input {name!r}"
        if name in arrays:
            raise _fail(f"{where} appears more than once")
        datatype = item.get("datatype")
        dtype = DATATYPE_TO_NUMPY.get(datatype) if type(datatype) is str else None
        if dtype is None:
            raise _fail(f"{where}: 'datatype' must be one of {_DATATYPE_LIST}, got {datatype!r}")
        shape = _check_shape(item.get("shape"), where)
        count = math.prod(shape)
        item_params = item.get("parameters")
        if item_params is not None and type(item_params) is not dict:
            raise _fail(f"{where}: 'parameters' must be an object")
        binary_size = item_params.get("binary_data_size") if item_params else None
        if binary_size is not None:
            if binary is None:
                raise _fail(f"{where} has binary_data_size but the request has no Inference-Header-Content-Length")
            if type(binary_size) is not int or binary_size < 0:
                raise _fail(f"{where}: binary_data_size must be a non-negative integer")
            if offset + binary_size > len(binary):
                raise _fail(f"{where}: binary_data_size {binary_size} runs past the end of the body")
            expected = count * dtype.itemsize
            if binary_size != expected:
                raise _fail(
                    f"{where}: binary_data_size is {binary_size} bytes but shape {shape} of {datatype} needs {expected}"
                )
            flat = np.frombuffer(binary[offset:offset + binary_size], dtype=dtype.newbyteorder("<"))
            offset += binary_size
            if dtype.kind == "f" and not np.isfinite(flat).all():
                raise _fail(f"{where}: binary data holds NaN or infinite values")
        else:
            if "data" not in item:
                raise _fail(f"{where} has no 'data' (nor parameters.binary_data_size)")
            flat = _array_from_json(item["data"], dtype, where)
        if flat.size != count:
            raise _fail(f"{where} has {flat.size} values but shape {shape} needs {count}")
        arrays[name] = flat.reshape(shape)
    if binary is not None and offset != len(binary):
        raise _fail(f"the body has {len(binary) - offset} bytes of binary data that no input claims")

    output_names: list[str] | None = None
    binary_outputs: set[str] = set()
    outputs = doc.get("outputs")
    if outputs is not None:
        if type(outputs) is not list:
            raise _fail("'outputs' must be a list of {\"name\": ...} objects")
        output_names = []
        for position, item in enumerate(outputs):
            if type(item) is not dict or type(item.get("name")) is not str or not item["name"]:
                raise _fail(f"outputs[{position}] must be an object with a non-empty string 'name'")
            out_params = item.get("parameters")
            if out_params is not None:
                if type(out_params) is not dict:
                    raise _fail(f"outputs[{position}]: 'parameters' must be an object")
                flag = out_params.get("binary_data", False)
                if type(flag) is not bool:
                    raise _fail(f"outputs[{position}]: parameters.binary_data must be true or false")
                if flag:
                    binary_outputs.add(item["name"])
            output_names.append(item["name"])
        if len(set(output_names)) != len(output_names):
            raise _fail("'outputs' names an output more than once")
    return InferRequest(arrays, request_id, output_names, binary_outputs, all_binary)


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    binary_outputs: set[str] | None = None,
    all_binary: bool = False,
) -> tuple[bytes, int | None]:
    """Encode outputs as an OIP v2 response. Returns (body, JSON header length or None when all JSON)."""
    entries: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        array = np.ascontiguousarray(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array.dtype), "shape": list(array.shape)}
        if all_binary or (binary_outputs and name in binary_outputs):
            payload = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(payload)}
            blobs.append(payload)
        else:
            entry["data"] = array.ravel()
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": entries}
    if request_id is not None:
        doc["id"] = request_id
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def error_body(message: str) -> bytes:
    """The protocol's error object."""
    return orjson.dumps({"error": message})
