"""The Open Inference Protocol codec against tritonclient's own request encoder and response
decoder (a client nobody here wrote), and every malformed request it must refuse."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnext_deploy.serve.protocol import (
    InferRequest,
    RequestError,
    TensorSpec,
    encode_infer_response,
    parse_infer_request,
    serialize_bytes,
)

triton = pytest.importorskip("tritonclient.http", reason="the serve tests need the [test] extra")

INPUT = TensorSpec("input", "FP32", (-1, 3, 4, 4))
IMAGE = TensorSpec("image", "UINT8", (-1, 4, 4, 3))
OUTPUTS = ("logits", "probabilities")
LABELS = ["cat", "dog", "eel"]


def _encode(x: np.ndarray, name: str = "input", binary: bool = True, **kw):  # noqa: ANN003, ANN202
    datatype = {np.float32: "FP32", np.uint8: "UINT8", np.float64: "FP64"}[x.dtype.type]
    tensor = triton.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x, binary_data=binary)
    body, json_size = triton.InferenceServerClient.generate_request_body([tensor], **kw)
    return body, None if json_size is None else str(json_size)


def _parse(body: bytes, header: str | None = None, spec: TensorSpec = INPUT, max_batch: int = 8):  # noqa: ANN202
    return parse_infer_request(body, header, spec, OUTPUTS, max_batch)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_parse_to_the_exact_array(binary: bool) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    body, header = _encode(x, binary=binary)
    assert (header is not None) == binary  # tritonclient sends binary tensors by default
    parsed = _parse(body, header)
    np.testing.assert_array_equal(parsed.array, x)
    assert parsed.array.dtype == np.float32 and parsed.binary_output  # no outputs -> binary


def test_uint8_images_parse_in_json_and_binary() -> None:
    x = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    for binary in (True, False):
        body, header = _encode(x, "image", binary)
        np.testing.assert_array_equal(_parse(body, header, IMAGE).array, x)


def test_responses_decode_with_tritonclient_json_binary_and_classification() -> None:
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.5, 0.25]], dtype=np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    outputs = {"logits": logits, "probabilities": probs.astype(np.float32)}
    x = np.zeros((2, 3, 4, 4), np.float32)
    requested = [
        triton.InferRequestedOutput("logits", binary_data=False),
        triton.InferRequestedOutput("probabilities", binary_data=True, class_count=2),
    ]
    body, header = _encode(x, outputs=requested, request_id="r1")
    parsed = _parse(body, header)
    response, headers = encode_infer_response("m", parsed, outputs, LABELS)
    length = headers.get("Inference-Header-Content-Length")
    result = triton.InferResult.from_response_body(
        response, header_length=int(length) if length else None
    )
    np.testing.assert_array_equal(result.as_numpy("logits"), logits)
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 2)
    assert top[0, 0].decode().endswith(":1:dog") and top[1, 0].decode().endswith(":0:cat")
    assert float(top[0, 0].decode().split(":")[0]) == pytest.approx(probs[0, 1], abs=1e-6)
    assert result.get_response()["id"] == "r1"


def test_all_outputs_come_back_binary_when_none_are_named() -> None:
    outputs = {"logits": np.ones((1, 3), np.float32), "probabilities": np.ones((1, 3), np.float32)}
    response, headers = encode_infer_response(
        "m", InferRequest(np.zeros(1), binary_output=True), outputs, LABELS
    )
    result = triton.InferResult.from_response_body(
        response, header_length=int(headers["Inference-Header-Content-Length"])
    )
    assert [o["name"] for o in result.get_response()["outputs"]] == list(OUTPUTS)
    np.testing.assert_array_equal(result.as_numpy("probabilities"), outputs["probabilities"])


def test_bytes_tensors_serialize_as_triton_does() -> None:
    from tritonclient.utils import deserialize_bytes_tensor

    values = np.array(["a", "héllo", ""], dtype=object)
    assert [v.decode() for v in deserialize_bytes_tensor(serialize_bytes(values))] == list(values)


def _json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def _tensor(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "input",
        "datatype": "FP32",
        "shape": [1, 3, 4, 4],
        "data": [0.5] * 48,
    }
    entry.update(overrides)
    return entry


BAD_REQUESTS = {
    "not json": (b"{not json", None, "not valid JSON"),
    "not utf-8": (b'{"inputs": "\xc3\x28"}', None, "not UTF-8"),
    "json list": (_json([1, 2]), None, "JSON object"),
    "no inputs": (_json({}), None, "'inputs'"),
    "two inputs": (_json({"inputs": [_tensor(), _tensor()]}), None, "exactly one input"),
    "wrong name": (_json({"inputs": [_tensor(name="x")]}), None, "unexpected input 'x'"),
    "wrong dtype": (_json({"inputs": [_tensor(datatype="FP64")]}), None, "datatype 'FP64'"),
    "wrong rank": (_json({"inputs": [_tensor(shape=[3, 4, 4])]}), None, "does not fit"),
    "wrong dims": (_json({"inputs": [_tensor(shape=[1, 3, 5, 4])]}), None, "does not fit"),
    "string dims": (_json({"inputs": [_tensor(shape=["1", 3, 4, 4])]}), None, "does not fit"),
    "zero batch": (_json({"inputs": [_tensor(shape=[0, 3, 4, 4], data=[])]}), None, "1 to 8"),
    "batch too big": (
        _json({"inputs": [_tensor(shape=[9, 3, 4, 4], data=[0.0] * 432)]}),
        None,
        "1 to 8",
    ),
    "too few values": (_json({"inputs": [_tensor(data=[0.5] * 47)]}), None, "47 values"),
    "strings": (_json({"inputs": [_tensor(data=["a"] * 48)]}), None, "numbers only"),
    "ragged": (_json({"inputs": [_tensor(data=[[0.5] * 47, [0.5]])]}), None, "numbers only"),
    "null": (_json({"inputs": [_tensor(data=[None] * 48)]}), None, "null, NaN"),
    "no data": (
        _json({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 4, 4]}]}),
        None,
        "no 'data'",
    ),
    "unknown output": (
        _json({"inputs": [_tensor()], "outputs": [{"name": "features"}]}),
        None,
        "unknown output 'features'",
    ),
    "bad class count": (
        _json(
            {
                "inputs": [_tensor()],
                "outputs": [{"name": "logits", "parameters": {"classification": -1}}],
            }
        ),
        None,
        "classification",
    ),
    "shared memory": (
        _json({"inputs": [_tensor(parameters={"shared_memory_region": "r"})]}),
        None,
        "shared-memory",
    ),
    "header length not int": (_json({"inputs": [_tensor()]}), "abc", "must be an integer"),
    "header length past body": (_json({"inputs": [_tensor()]}), "100000", "body has"),
    "undeclared binary": (_json({"inputs": [_tensor()]}) + b"1234", None, "no input declares"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_malformed_requests_are_400_with_a_reason(case: str) -> None:
    body, header, message = BAD_REQUESTS[case]
    if case == "undeclared binary":
        header = str(len(body) - 4)
    with pytest.raises(RequestError, match=message) as info:
        _parse(body, header)
    assert info.value.status == 400


def test_binary_sizes_must_match_the_shape_and_the_body() -> None:
    x = np.zeros((1, 3, 4, 4), np.float32)
    body, header = _encode(x)
    assert header is not None
    with pytest.raises(RequestError, match="declares 192"):
        _parse(body[:-4], header)  # truncated tensor bytes
    with pytest.raises(RequestError, match="declares 192"):
        _parse(body + b"\0\0\0\0", header)  # trailing bytes
    header_json = json.loads(body[: int(header)])
    header_json["inputs"][0]["parameters"]["binary_data_size"] = 100
    forged = json.dumps(header_json).encode()
    with pytest.raises(RequestError, match="needs 192 bytes"):
        _parse(forged + body[int(header) :], str(len(forged)))


def test_uint8_json_values_must_be_bytes() -> None:
    for bad in (256, -1, 0.5):
        body = _json(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": [1, 4, 4, 3],
                        "data": [bad] * 48,
                    }
                ]
            }
        )
        with pytest.raises(RequestError, match="integers in 0..255"):
            _parse(body, None, IMAGE)
