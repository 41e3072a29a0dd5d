"""The gRPC API without Ray: GrpcInferenceAPI on the tiny export behind a real in-process
``grpc.aio`` server, driven by tritonclient's gRPC client (a client nobody here wrote) and by
the generated stub where a request must be crafted past the client's own checks. Answers are
compared with plain onnxruntime on the same file; bad requests must be refused with the
messages the HTTP path gives, and never reach the model."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

triton = pytest.importorskip("tritonclient.grpc", reason="the serve tests need the [test] extra")
triton_http = pytest.importorskip("tritonclient.http")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

import grpc  # noqa: E402 - after the skips: tritonclient[grpc] brings it
from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import service_pb2 as pb  # noqa: E402
from tritonclient.grpc import service_pb2_grpc  # noqa: E402

from resnext_deploy import __version__  # noqa: E402
from resnext_deploy.artifact import Variant  # noqa: E402
from resnext_deploy.preprocess import preprocess  # noqa: E402
from resnext_deploy.serve.config import ServeConfig  # noqa: E402
from resnext_deploy.serve.grpc_protocol import RPCS, GrpcInferenceAPI, grpc_status  # noqa: E402
from resnext_deploy.serve.model import ServedModel  # noqa: E402
from resnext_deploy.serve.protocol import RequestError, parse_infer_request  # noqa: E402
from resnext_deploy.serve.routes import HttpRequest, Infer, InferenceAPI  # noqa: E402
from resnext_deploy.serve.stats import ModelStatistics, RequestTiming  # noqa: E402

MODEL = "resnext14_8x4d"
MAX_BATCH = 4
DATATYPES = {np.float32: "FP32", np.float64: "FP64", np.uint8: "UINT8"}


class Servicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    """The adapter a deployment writes: every RPC handed to the API, context and all."""

    def __init__(self, api: GrpcInferenceAPI) -> None:
        self.api = api


def _forward(rpc: str) -> Callable[..., object]:
    async def method(self: Servicer, request: object, context: grpc.aio.ServicerContext) -> object:
        return await self.api.handle(rpc, request, context)

    return method


for _rpc in RPCS:
    setattr(Servicer, _rpc, _forward(_rpc))


@contextmanager
def grpc_server(api: GrpcInferenceAPI) -> Iterator[str]:
    """The address of a ``grpc.aio`` server on a free loopback port, on its own event loop in
    a thread (the clients block)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(api), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(None), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


class Counted:
    """The model's run as an ``Infer``, counting the batches that reached it."""

    def __init__(self, model: ServedModel) -> None:
        self.model = model
        self.calls = 0

    async def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        self.calls += 1
        return self.model.run(batch)


@dataclass
class Served:
    model: ServedModel
    infer: Counted
    client: Any  # tritonclient.grpc.InferenceServerClient
    stub: service_pb2_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def model(tiny_export: Path) -> ServedModel:
    return ServedModel(ServeConfig(export_dir=tiny_export, max_batch_size=MAX_BATCH))


@pytest.fixture(scope="module")
def served(model: ServedModel) -> Iterator[Served]:
    infer = Counted(model)
    with (
        grpc_server(GrpcInferenceAPI(model, infer)) as address,
        triton.InferenceServerClient(address) as client,
        grpc.insecure_channel(address) as channel,
    ):
        yield Served(model, infer, client, service_pb2_grpc.GRPCInferenceServiceStub(channel))


@pytest.fixture(scope="module")
def photos(model: ServedModel) -> np.ndarray:
    """china.jpg and flower.jpg, colour 427 x 640, preprocessed as ``predict`` does."""
    from sklearn.datasets import load_sample_images

    x = preprocess(list(load_sample_images().images), model.spec)
    assert x.shape == (2, 3, 64, 64) and x.dtype == np.float32
    return x


def _reference(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Plain onnxruntime on the file: the independent answer."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def _input(x: np.ndarray, name: str = "input") -> Any:
    return triton.InferInput(name, list(x.shape), DATATYPES[x.dtype.type]).set_data_from_numpy(x)


def test_tritonclient_infer_matches_onnxruntime_on_colour_photos(
    served: Served, photos: np.ndarray, tiny_export: Path
) -> None:
    expected = _reference(tiny_export / "model.onnx", {"input": photos})["logits"]
    for rows in (slice(0, 2), slice(1, 2)):
        x = photos[rows]
        result = served.client.infer(MODEL, [_input(x)], request_id="photos")
        response = result.get_response()
        assert (response.model_name, response.model_version, response.id) == (
            MODEL,
            "1",
            "photos",
        )
        assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [
            ("logits", "FP32", [len(x), 7])
        ]
        np.testing.assert_allclose(result.as_numpy("logits"), expected[rows], rtol=0, atol=1e-5)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)  # the photos tell apart


def test_class_count_answers_triton_classification_strings(
    served: Served, photos: np.ndarray, tiny_export: Path
) -> None:
    logits = _reference(tiny_export / "model.onnx", {"input": photos})["logits"]
    outputs = [triton.InferRequestedOutput("logits", class_count=3)]
    result = served.client.infer(MODEL, [_input(photos)], outputs=outputs)
    assert result.get_output("logits").datatype == "BYTES"
    top = result.as_numpy("logits")
    assert top.shape == (2, 3)
    for row, entries in zip(logits, top, strict=True):
        parts = [entry.decode().split(":") for entry in entries]
        assert [int(p[1]) for p in parts] == list(np.argsort(-row)[:3])
        assert [p[2] for p in parts] == [f"c{p[1]}" for p in parts]
        np.testing.assert_allclose(
            [float(p[0]) for p in parts], np.sort(row)[::-1][:3], rtol=0, atol=1e-5
        )


def test_only_the_requested_outputs_come_back_for_uint8_images(
    tiny_preprocess_export: Path,
) -> None:
    from sklearn.datasets import load_sample_images

    config = ServeConfig(
        export_dir=tiny_preprocess_export, variant=Variant.PREPROCESS, max_batch_size=MAX_BATCH
    )
    model = ServedModel(config)
    images = np.stack([im[100:164, 200:264] for im in load_sample_images().images])  # 64 x 64
    expected = _reference(tiny_preprocess_export / "model.preprocess.onnx", {"image": images})
    with (
        grpc_server(GrpcInferenceAPI(model, Counted(model))) as address,
        triton.InferenceServerClient(address) as client,
    ):
        wanted = [triton.InferRequestedOutput("probabilities")]
        result = client.infer(MODEL, [_input(images, "image")], outputs=wanted)
        assert [o.name for o in result.get_response().outputs] == ["probabilities"]
        assert result.as_numpy("logits") is None
        np.testing.assert_allclose(
            result.as_numpy("probabilities"), expected["probabilities"], rtol=0, atol=1e-5
        )
        every = client.infer(MODEL, [_input(images, "image")])  # none named: all, in order
        assert [o.name for o in every.get_response().outputs] == ["logits", "probabilities"]
        np.testing.assert_allclose(every.as_numpy("logits"), expected["logits"], atol=1e-5)


def _typed_request(shape: tuple[int, ...], **contents: list[Any]) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(shape))
    for field, values in contents.items():
        getattr(tensor.contents, field).extend(values)
    return request


def test_typed_fp32_contents_answer_as_raw_inputs_do(
    served: Served, photos: np.ndarray, tiny_export: Path
) -> None:
    expected = _reference(tiny_export / "model.onnx", {"input": photos})["logits"]
    request = _typed_request(photos.shape, fp32_contents=photos.reshape(-1).tolist())
    response = served.stub.ModelInfer(request)
    assert [(o.name, list(o.shape)) for o in response.outputs] == [("logits", [2, 7])]
    logits = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(2, 7)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)


def _http_message(model: ServedModel, tensor: Any) -> str:
    """What the HTTP path answers the same request with (tritonclient.http's encoding)."""
    body, size = triton_http.InferenceServerClient.generate_request_body([tensor])
    with pytest.raises(RequestError) as info:
        parse_infer_request(body, str(size), model.input, model.output_names, model.max_batch_size)
    assert info.value.status == 400
    return str(info.value)


def _ones(*shape: int, dtype: type = np.float32) -> np.ndarray:
    return np.ones(shape, dtype)


def _with(value: float) -> np.ndarray:
    x = _ones(1, 3, 64, 64)
    x[0, 1, 2, 3] = value
    return x


# case -> (input name, array, shape declared after the data (None: the array's), message)
CLIENT_CASES = {
    "wrong name": ("x", _ones(1, 3, 64, 64), None, "unexpected input 'x'"),
    "wrong datatype": ("input", _ones(1, 3, 64, 64, dtype=np.float64), None, "datatype 'FP64'"),
    "wrong shape": ("input", _ones(1, 3, 32, 32), None, "does not fit"),
    "batch too big": ("input", _ones(MAX_BATCH + 1, 3, 64, 64), None, f"1 to {MAX_BATCH}"),
    "nan in raw fp32": ("input", _with(np.nan), None, "null, NaN or infinite"),
    "inf in raw fp32": ("input", _with(-np.inf), None, "null, NaN or infinite"),
    "size mismatch": ("input", _ones(1, 3, 64, 64), [2, 3, 64, 64], "needs 98304 bytes of FP32"),
}


@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_bad_requests_through_tritonclient_are_refused_as_http_refuses_them(
    served: Served, case: str
) -> None:
    name, x, shape, message = CLIENT_CASES[case]
    calls = served.infer.calls
    tensors = []
    for module in (triton, triton_http):
        tensor = module.InferInput(name, list(x.shape), DATATYPES[x.dtype.type])
        tensor.set_data_from_numpy(x)
        tensors.append(tensor.set_shape(shape) if shape else tensor)  # bytes for x.shape only
    with pytest.raises(InferenceServerException) as info:
        served.client.infer(MODEL, [tensors[0]])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in info.value.message()
    assert info.value.message() == _http_message(served.model, tensors[1])
    assert served.infer.calls == calls


def test_unknown_models_versions_and_outputs_through_tritonclient(
    served: Served, photos: np.ndarray
) -> None:
    calls = served.infer.calls
    x = [_input(photos[:1])]
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"model_name": "other"}, "StatusCode.NOT_FOUND", "unknown model 'other'"),
        ({"model_version": "2"}, "StatusCode.NOT_FOUND", "has only version 1"),
        (
            {"outputs": [triton.InferRequestedOutput("features")]},
            "StatusCode.INVALID_ARGUMENT",
            "unknown output 'features'",
        ),
    ]
    for kw, status, message in cases:
        with pytest.raises(InferenceServerException) as info:
            served.client.infer(**({"model_name": MODEL, "inputs": x} | kw))
        assert info.value.status() == status, kw
        assert message in info.value.message(), kw
    assert served.infer.calls == calls


def _raw_request(*raw: bytes, shape: tuple[int, ...] = (1, 3, 64, 64)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL, raw_input_contents=list(raw))
    request.inputs.add(name="input", datatype="FP32", shape=list(shape))
    return request


def _crafted_requests() -> dict[str, tuple[pb.ModelInferRequest, str]]:
    shape, one = (1, 3, 64, 64), _ones(1, 3, 64, 64).tobytes()
    values = [1.0] * 12288
    mixed = _raw_request(one)
    mixed.inputs[0].contents.fp32_contents.extend(values)
    shared = _raw_request(one)
    shared.inputs[0].parameters["shared_memory_region"].string_param = "region"
    text_count = _raw_request(one)
    text_count.outputs.add(name="logits").parameters["classification"].string_param = "3"
    return {
        "truncated raw": (_raw_request(one[:-4]), "binary_data_size says 49148"),
        "odd raw": (_raw_request(one + b"\0"), "needs 49152 bytes of FP32"),
        "two raw for one input": (_raw_request(one, one), "holds 2 tensors for 1 inputs"),
        "raw and typed": (mixed, "not both"),
        "typed too few": (_typed_request(shape, fp32_contents=values[1:]), "has 12287 values"),
        "typed nan": (
            _typed_request(shape, fp32_contents=[float("nan"), *values[1:]]),
            "null, NaN or infinite",
        ),
        "typed in the wrong field": (
            _typed_request(shape, int_contents=[1] * 12288),
            "whose values go in fp32_contents, not int_contents",
        ),
        "typed in two fields": (
            _typed_request(shape, fp32_contents=values, int_contents=[1]),
            "has values in int_contents and fp32_contents",
        ),
        "no values": (_raw_request(), "has 0 values"),
        "shared memory": (shared, "shared-memory inputs are not supported"),
        "classification not an integer": (text_count, "classification of output 'logits'"),
    }


def test_crafted_raw_and_typed_requests_are_refused(served: Served) -> None:
    calls = served.infer.calls
    for case, (request, message) in _crafted_requests().items():
        with pytest.raises(grpc.RpcError) as info:
            served.stub.ModelInfer(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, case
        assert message in info.value.details(), (case, info.value.details())
    assert served.infer.calls == calls


def test_health_metadata_and_config_through_tritonclient(served: Served, tiny_export: Path) -> None:
    import onnxruntime as ort

    client = served.client
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("other") and not client.is_model_ready(MODEL, "2")
    server = client.get_server_metadata()
    http = _routes_server_metadata(served.model)
    assert (server.name, server.version, list(server.extensions)) == (
        "resnext-deploy",
        __version__,
        http["extensions"],
    )
    session = ort.InferenceSession(str(tiny_export / "model.onnx"))
    meta = client.get_model_metadata(MODEL)
    assert (meta.name, list(meta.versions), meta.platform) == (MODEL, ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        (i.name, "FP32", [-1, *i.shape[1:]]) for i in session.get_inputs()
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("logits", "FP32", [-1, 7])
    ]
    config = client.get_model_config(MODEL).config
    assert (config.name, config.platform, config.backend) == (
        MODEL,
        "onnxruntime_onnx",
        "onnxruntime",
    )
    assert config.max_batch_size == MAX_BATCH and list(config.input[0].dims) == [3, 64, 64]
    assert config.input[0].data_type == triton.model_config_pb2.TYPE_FP32
    for call in (client.get_model_metadata, client.get_model_config):
        with pytest.raises(InferenceServerException) as info:
            call("other")
        assert info.value.status() == "StatusCode.NOT_FOUND"
        assert "unknown model 'other'" in info.value.message()


def _routes_server_metadata(model: ServedModel) -> dict[str, object]:
    async def unused(batch: np.ndarray) -> dict[str, np.ndarray]:
        raise AssertionError("metadata runs no model")

    response = asyncio.run(InferenceAPI(model, unused, 1).handle(HttpRequest("GET", "/v2")))
    return json.loads(response.body)


def test_the_model_config_round_trips_through_triton_s_message(served: Served) -> None:
    config = served.client.get_model_config(MODEL).config
    back = json_format.MessageToDict(config, preserving_proto_field_name=True)
    for tensor in back["input"] + back["output"]:
        tensor["dims"] = [int(d) for d in tensor["dims"]]  # int64 fields come back as text
    assert back == served.model.triton_config()


def test_statistics_through_tritonclient_are_the_counts_given(model: ServedModel) -> None:
    counts = ModelStatistics()
    timing = RequestTiming(arrived=1_000)
    timing.ran(1_100, 1_300, 1_700, images=2)
    counts.request_done(timing, ok=True)
    counts.batch_ran(2, input_ns=10, infer_ns=400, output_ns=30)

    async def statistics() -> ModelStatistics:
        return counts

    with (
        grpc_server(GrpcInferenceAPI(model, Counted(model), statistics)) as address,
        triton.InferenceServerClient(address) as client,
    ):
        for name in (MODEL, ""):  # no name: every model's, and this server has one
            (entry,) = client.get_inference_statistics(name).model_stats
            assert (entry.name, entry.version, entry.inference_count, entry.execution_count) == (
                MODEL,
                "1",
                2,
                1,
            )
            assert entry.last_inference == counts.last_inference > 0
            stats = entry.inference_stats
            assert (stats.success.count, stats.queue.ns, stats.compute_infer.ns) == (1, 200, 400)
            assert [(b.batch_size, b.compute_infer.ns) for b in entry.batch_stats] == [(2, 400)]
        with pytest.raises(InferenceServerException) as info:
            client.get_inference_statistics("other")
        assert info.value.status() == "StatusCode.NOT_FOUND"


def test_model_failures_are_internal_and_the_server_keeps_answering(
    model: ServedModel, photos: np.ndarray
) -> None:
    async def broken(batch: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("session lost")

    infer: Infer = broken
    with (
        grpc_server(GrpcInferenceAPI(model, infer)) as address,
        triton.InferenceServerClient(address) as client,
    ):
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, [_input(photos[:1])])
        assert info.value.status() == "StatusCode.INTERNAL"
        assert "RuntimeError: session lost" in info.value.message()
        assert client.is_server_ready()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT),
        (404, grpc.StatusCode.NOT_FOUND),
        (413, grpc.StatusCode.RESOURCE_EXHAUSTED),
        (501, grpc.StatusCode.UNIMPLEMENTED),
        (503, grpc.StatusCode.UNAVAILABLE),
        (500, grpc.StatusCode.INTERNAL),
        (415, grpc.StatusCode.INTERNAL),
    ],
)
def test_grpc_status_is_the_code_triton_answers_with(status: int, code: grpc.StatusCode) -> None:
    assert grpc_status(RequestError(status, "x")) == code
