"""The Open Inference Protocol (KServe v2) over HTTP, as Triton speaks it: request parsing and
response encoding, numpy only (no Ray, no web framework).

Inputs arrive as JSON ``data`` or through Triton's binary tensor extension (the JSON header's
length in the ``Inference-Header-Content-Length`` header, then each input's raw bytes, sized by
its ``binary_data_size`` parameter) -- the form tritonclient's HTTP client sends by default.
Outputs go back as JSON or binary, per output (``binary_data``) or for all of them
(``binary_data_output``), and an output may ask for the classification extension
(``classification: k`` -> ``"value:index:label"`` strings), as in Triton.

Every malformed request raises :class:`RequestError` with an HTTP status and a message that
says what was wrong, before anything reaches the model. :func:`parse_request` holds those rules
for every transport: the gRPC API (:mod:`.grpc_protocol`) translates its requests into the same
JSON form.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnext_deploy.artifact import ONNX_TO_V2
from resnext_deploy.errors import DeployError

# onnxruntime's type strings (``tensor(float)``) -> the protocol's datatypes.
ORT_TO_V2 = {f"tensor({onnx_type})": v2 for onnx_type, v2 in ONNX_TO_V2.items()}
# The protocol's datatypes -> numpy dtypes.
V2_DTYPES: dict[str, np.dtype[Any]] = {
    "FP32": np.dtype("<f4"),
    "FP16": np.dtype("<f2"),
    "FP64": np.dtype("<f8"),
    "UINT8": np.dtype("u1"),
    "INT8": np.dtype("i1"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "BOOL": np.dtype("?"),
}
# numpy dtype strings -> the protocol's datatypes, for outputs.
NUMPY_TO_V2 = {dtype.str: name for name, dtype in V2_DTYPES.items()}
BINARY_HEADER = "Inference-Header-Content-Length"
MAX_INT_DIGITS = 40  # as resnext_deploy.validate.MAX_JSON_INT_DIGITS


class RequestError(DeployError):
    """A request the server refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def bad_request(message: str) -> RequestError:
    return RequestError(400, message)


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, protocol datatype and shape (``-1``: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype[Any]:
        return V2_DTYPES[self.datatype]

    def describe(self) -> str:
        return f"{self.name!r} ({self.datatype}, shape {list(self.shape)})"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None = None
    class_count: int = 0


@dataclass(frozen=True)
class InferRequest:
    """A parsed, validated infer request: the input batch and what to send back."""

    array: np.ndarray
    request_id: str | None = None
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    model_input: TensorSpec,
    output_names: tuple[str, ...],
    max_batch_size: int,
) -> InferRequest:
    """Parse and validate an infer request body for a model with one input.

    Raises :class:`RequestError` (400) for malformed JSON, a bad binary header length, or
    anything :func:`parse_request` refuses.
    """
    header, binary = _split_body(body, header_length)
    return parse_request(_json_request(header), binary, model_input, output_names, max_batch_size)


def parse_request(
    request: Any,
    binary: bytes,
    model_input: TensorSpec,
    output_names: tuple[str, ...],
    max_batch_size: int,
) -> InferRequest:
    """Validate an infer request in the protocol's JSON form, ``binary`` holding the tensor
    bytes its inputs' ``binary_data_size`` parameters declare. The one set of rules for every
    transport: HTTP parses its JSON header into this form and gRPC translates its protobuf
    into it, so both refuse the same requests with the same messages.

    Raises :class:`RequestError` (400) for a wrong input name, datatype, shape or data size,
    NaN or infinity in a float input, a batch larger than ``max_batch_size``, or an unknown
    output.
    """
    if not isinstance(request, dict):
        raise bad_request("the request must be a JSON object with an 'inputs' list")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise bad_request("the request needs a non-empty 'inputs' list")
    if len(inputs) != 1:
        raise bad_request(f"the model takes exactly one input, {model_input.describe()}")
    array = _parse_input(inputs[0], binary, model_input, max_batch_size)
    params = _parameters(request, "request")
    request_id = request.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise bad_request("'id' must be a string")
    return InferRequest(
        array,
        request_id,
        _parse_outputs(request.get("outputs"), output_names),
        _flag(params, "binary_data_output", "request"),
    )


def _json_request(header: bytes) -> Any:
    def bounded_int(digits: str) -> int:
        # Past this a number is no tensor value, and Python's int() of 4,300+ digits raises.
        if len(digits.lstrip("-")) > MAX_INT_DIGITS:
            raise bad_request(
                f"request JSON holds an integer of {len(digits)} digits; numbers in a request "
                f"have at most {MAX_INT_DIGITS}"
            )
        return int(digits)

    try:
        return json.loads(header, parse_int=bounded_int)
    except UnicodeDecodeError:
        raise bad_request("request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise bad_request("request JSON is nested too deeply") from None


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    try:
        n = int(header_length)
    except ValueError:
        raise bad_request(f"{BINARY_HEADER} must be an integer, got {header_length!r}") from None
    if not 0 <= n <= len(body):
        raise bad_request(f"{BINARY_HEADER} is {n} but the body has {len(body)} bytes")
    return body[:n], body[n:]


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise bad_request(f"'parameters' of the {where} must be an object")
    return params


def _flag(params: dict[str, Any], key: str, where: str) -> bool:
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise bad_request(f"parameter {key!r} of the {where} must be true or false")
    return value


def _parse_input(entry: Any, binary: bytes, spec: TensorSpec, max_batch_size: int) -> np.ndarray:
    if not isinstance(entry, dict):
        raise bad_request("each input must be an object with name, datatype, shape and data")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    if name != spec.name:
        raise bad_request(f"unexpected input {name!r}: the model takes {spec.describe()}")
    if datatype != spec.datatype:
        raise bad_request(
            f"input {name!r} has datatype {datatype!r}; the model takes {spec.describe()}"
        )
    shape = _check_shape(shape, spec, max_batch_size)
    count = math.prod(shape)
    params = _parameters(entry, f"input {name!r}")
    if "shared_memory_region" in params:
        raise bad_request("shared-memory inputs are not supported by this server; send the data")
    if "binary_data_size" in params:
        size = params["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad_request(f"binary_data_size of input {name!r} must be a non-negative integer")
        expected = count * spec.dtype.itemsize
        if size != expected:
            raise bad_request(
                f"input {name!r} of shape {shape} needs {expected} bytes of {datatype}, "
                f"binary_data_size says {size}"
            )
        if len(binary) != size:
            raise bad_request(
                f"the body holds {len(binary)} bytes of binary tensor data, input {name!r} "
                f"declares {size}"
            )
        return _finite(np.frombuffer(binary, dtype=spec.dtype).reshape(shape).copy(), name)
    if binary:
        raise bad_request("the body has binary data but no input declares binary_data_size")
    if "data" not in entry:
        raise bad_request(f"input {name!r} has no 'data' (and no binary_data_size)")
    return _json_data(entry["data"], name, shape, spec)


def _check_shape(shape: Any, spec: TensorSpec, max_batch_size: int) -> list[int]:
    ok = (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and len(shape) == len(spec.shape)
        and all(want in (-1, got) for want, got in zip(spec.shape, shape, strict=True))
    )
    if not ok:
        raise bad_request(f"input shape {shape!r} does not fit {spec.describe()}")
    if not 1 <= shape[0] <= max_batch_size:
        raise bad_request(
            f"batch of {shape[0]} images: this server takes 1 to {max_batch_size} per request"
        )
    return list(shape)


def _json_data(data: Any, name: str, shape: list[int], spec: TensorSpec) -> np.ndarray:
    if not isinstance(data, list):
        raise bad_request(f"'data' of input {name!r} must be a (flat or nested) list of numbers")
    try:
        values = np.array(data, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise bad_request(
            f"'data' of input {name!r} must hold numbers only, in a regular shape"
        ) from None
    if values.size != math.prod(shape):
        raise bad_request(
            f"input {name!r} has {values.size} values; shape {shape} needs {math.prod(shape)}"
        )
    _finite(values, name)
    if spec.dtype.kind in "iub":
        info = np.iinfo(spec.dtype) if spec.dtype.kind != "b" else None
        low, high = (info.min, info.max) if info else (0, 1)
        if (values != np.round(values)).any() or values.min() < low or values.max() > high:
            raise bad_request(f"input {name!r} ({spec.datatype}) takes integers in {low}..{high}")
    # Finite in float64 may still overflow the model's type (1e39 in FP32): checked again.
    with np.errstate(over="ignore"):
        return _finite(values.astype(spec.dtype).reshape(shape), name)


def _finite(values: np.ndarray, name: str) -> np.ndarray:
    """``values``, or a 400 when a float tensor holds NaN or infinity: one rule for JSON and
    binary inputs (a model fed NaN answers NaN, and a JSON answer cannot carry it)."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        raise bad_request(
            f"input {name!r} holds null, NaN or infinite values (or values too large for its "
            "datatype); send finite numbers"
        )
    return values


def _parse_outputs(outputs: Any, names: tuple[str, ...]) -> tuple[RequestedOutput, ...] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise bad_request("'outputs' must be a list of objects with a 'name'")
    parsed = []
    for entry in outputs:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in names:
            raise bad_request(
                f"unknown output {name!r}; the model's outputs are {', '.join(names)}"
            )
        params = _parameters(entry, f"output {name!r}")
        binary = params.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise bad_request(f"binary_data of output {name!r} must be true or false")
        count = params.get("classification", 0)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise bad_request(f"classification of output {name!r} must be a non-negative integer")
        parsed.append(RequestedOutput(name, binary, count))
    return tuple(parsed)


def encode_infer_response(
    model_name: str,
    request: InferRequest,
    outputs: dict[str, np.ndarray],
    labels: list[str],
) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, or a JSON header followed by binary tensors."""
    entries, chunks = [], []
    for want, datatype, value in requested_outputs(request, outputs, labels):
        entry: dict[str, Any] = {
            "name": want.name,
            "datatype": datatype,
            "shape": list(value.shape),
        }
        binary = request.binary_output if want.binary is None else want.binary
        if binary:
            raw = raw_bytes(value, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = value.reshape(-1).tolist()
        entries.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": entries}
    if request.request_id is not None:
        response["id"] = request.request_id
    header = json_bytes(response)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {
        "content-type": "application/octet-stream",
        BINARY_HEADER: str(len(header)),
    }


def requested_outputs(
    request: InferRequest, outputs: dict[str, np.ndarray], labels: list[str]
) -> list[tuple[RequestedOutput, str, np.ndarray]]:
    """The outputs to send back, in order, each with its datatype and value: those the request
    names (all of the model's where it names none), the classification extension applied."""
    wanted = request.outputs or tuple(RequestedOutput(name) for name in outputs)
    selected = []
    for want in wanted:
        value = outputs[want.name]
        if want.class_count:
            value = classification(value, want.class_count, labels)
        datatype = "BYTES" if value.dtype == object else NUMPY_TO_V2[value.dtype.str]
        selected.append((want, datatype, value))
    return selected


def raw_bytes(value: np.ndarray, datatype: str) -> bytes:
    """A tensor's bytes as the protocol carries them: row-major, little-endian (BYTES as
    :func:`serialize_bytes`)."""
    if datatype == "BYTES":
        return serialize_bytes(value)
    return np.ascontiguousarray(value).tobytes()


def json_bytes(data: Any) -> bytes:
    """``data`` as strict JSON. Raises :class:`RequestError` (500) where it holds NaN or
    infinity, which JSON cannot carry: a model's outputs can overflow on finite inputs."""
    try:
        return json.dumps(data, allow_nan=False).encode()
    except ValueError:
        raise RequestError(
            500,
            "the model's output for this input holds NaN or infinity, which JSON cannot carry "
            "(ask for binary_data outputs to get the raw values)",
        ) from None


def classification(values: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Triton's classification extension: the top ``k`` entries of each row as
    ``"value:index:label"`` strings (``"value:index"`` where there is no label)."""
    rows = values.reshape(values.shape[0], -1).astype(np.float64)
    k = min(k, rows.shape[1])
    order = np.argsort(-rows, axis=1, kind="stable")[:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, row in enumerate(order):
        for c, i in enumerate(row):
            label = f":{labels[i]}" if i < len(labels) else ""
            out[r, c] = f"{rows[r, i]:f}:{i}{label}"
    return out


def serialize_bytes(values: np.ndarray) -> bytes:
    """BYTES tensors in binary form: each element as a little-endian uint32 length + UTF-8."""
    parts = []
    for item in values.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)
