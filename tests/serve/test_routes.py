"""The HTTP API without Ray: a ServedModel on the tiny export behind InferenceAPI. The image
endpoint must answer what ``predict`` answers; bad requests must never reach the model."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.artifact import Variant
from resnext_deploy.errors import ArtifactError
from resnext_deploy.predict import Classifier, predict_paths
from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.model import ServedModel
from resnext_deploy.serve.routes import HttpRequest, InferenceAPI


class CountingAPI:
    """InferenceAPI whose model calls are counted."""

    def __init__(self, model: ServedModel, max_image_pixels: int = 50_000_000) -> None:
        self.model = model
        self.calls = 0

        async def infer(batch: np.ndarray) -> dict[str, np.ndarray]:
            self.calls += 1
            return model.run(batch)

        self.api = InferenceAPI(model, infer, max_image_pixels)

    def __call__(self, method: str, path: str, body: bytes = b"", **kw: object):  # noqa: ANN204
        request = HttpRequest(method, path, body, **kw)  # type: ignore[arg-type]
        return asyncio.run(self.api.handle(request))


@pytest.fixture(scope="module")
def model(tiny_export: Path) -> ServedModel:
    return ServedModel(ServeConfig(export_dir=tiny_export, max_batch_size=4))


@pytest.fixture(scope="module")
def samples() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china.jpg, flower.jpg: colour, 427 x 640


def _encoded(rgb: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format=fmt)
    return buffer.getvalue()


def test_metadata_names_the_model_s_real_tensors(model: ServedModel) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model.runner.session._model_path))
    meta = model.metadata()
    assert meta["name"] == "resnext14_8x4d"
    assert meta["inputs"] == [
        {"name": i.name, "datatype": "FP32", "shape": [-1, *i.shape[1:]]}
        for i in session.get_inputs()
    ]
    assert [o["name"] for o in meta["outputs"]] == [o.name for o in session.get_outputs()]
    assert meta["outputs"][0]["shape"] == [-1, 7]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_endpoint_answers_what_predict_answers(
    model: ServedModel, samples: list[np.ndarray], tiny_export: Path, tmp_path: Path, fmt: str
) -> None:
    api = CountingAPI(model)
    classifier = Classifier(tiny_export)
    for i, rgb in enumerate(samples):
        data = _encoded(rgb, fmt)
        path = tmp_path / f"sample{i}.{fmt.lower()}"
        path.write_bytes(data)  # predict reads the very same bytes from a file
        expected = predict_paths(classifier, [path], top_k=3).predictions[0]
        response = api("POST", "/models/resnext14_8x4d/classify", data, query={"top_k": "3"})
        assert response.status == 200, response.body
        top = json.loads(response.body)["top"]
        assert [t["label"] for t in top] == list(expected.labels)
        np.testing.assert_allclose(
            [t["probability"] for t in top], expected.probabilities, rtol=0, atol=1e-6
        )


def test_bad_requests_never_reach_the_model(model: ServedModel, samples: list[np.ndarray]) -> None:
    api = CountingAPI(model, max_image_pixels=100_000)
    gif = _encoded(samples[0][:64, :64], "GIF")
    jpeg = _encoded(samples[0][:200, :200], "JPEG")  # 40,000 px: under the limit
    big = _encoded(np.zeros((400, 400, 3), np.uint8), "PNG")  # 160,000 px > the 100,000 limit
    infer = "/v2/models/resnext14_8x4d/infer"
    classify = "/models/resnext14_8x4d/classify"
    cases = [
        ("POST", infer, b"{", {}, {}, 400, "not valid JSON"),
        ("POST", infer, b'{"inputs": [{"name": "x"}]}', {}, {}, 400, "unexpected input 'x'"),
        ("POST", infer, b"{}", {"content-encoding": "gzip"}, {}, 415, "Content-Encoding"),
        ("GET", infer, b"", {}, {}, 405, "takes POST"),
        ("POST", "/v2/models/other/infer", b"{}", {}, {}, 404, "unknown model 'other'"),
        ("GET", "/v2/models/resnext14_8x4d/versions/2", b"", {}, {}, 404, "only version 1"),
        ("GET", "/v3/anything", b"", {}, {}, 404, "no such endpoint"),
        ("POST", classify, b"", {}, {}, 400, "body is empty"),
        ("POST", classify, b"plain text, not an image", {}, {}, 400, "not a decodable"),
        ("POST", classify, b"\x89PNG\r\n\x1a\n garbage", {}, {}, 400, "does not decode"),
        ("POST", classify, jpeg[: len(jpeg) // 3], {}, {}, 400, "does not decode"),
        ("POST", classify, gif, {}, {}, 415, "only JPEG and PNG"),
        ("POST", classify, big, {}, {}, 400, "400x400 pixels"),
        ("POST", classify, jpeg, {}, {"top_k": "0"}, 400, "top_k must be"),
        ("POST", classify, jpeg, {}, {"top_k": "x"}, 400, "top_k must be"),
    ]
    for method, path, body, headers, query, status, message in cases:
        response = api(method, path, body, headers=headers, query=query)
        assert response.status == status, (path, body[:20], response.body)
        assert message in json.loads(response.body)["error"]
    assert api.calls == 0


def test_a_real_decompression_bomb_is_refused_from_its_header(model: ServedModel) -> None:
    api = CountingAPI(model)  # default limit: 50 Mpx
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")  # 100 Mpx in a few KB
    assert len(bomb.getvalue()) < 100_000
    response = api("POST", "/models/resnext14_8x4d/classify", bomb.getvalue())
    assert response.status == 400 and b"10000x10000" in response.body
    assert api.calls == 0


def test_model_errors_are_500_and_the_api_keeps_answering(model: ServedModel) -> None:
    async def broken(batch: np.ndarray) -> dict[str, np.ndarray]:
        raise RuntimeError("session lost")

    api = InferenceAPI(model, broken, 1_000_000)
    body = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": [1, 3, 64, 64],
                    "data": [0.0] * 12288,
                }
            ]
        }
    ).encode()
    response = asyncio.run(api.handle(HttpRequest("POST", "/v2/models/resnext14_8x4d/infer", body)))
    assert response.status == 500 and b"session lost" in response.body
    health = asyncio.run(api.handle(HttpRequest("GET", "/v2/health/ready")))
    assert health.status == 200


def test_a_modified_export_is_refused_before_serving(tiny_export: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "export"
    shutil.copytree(tiny_export, copy)
    with (copy / "model.onnx").open("r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    with pytest.raises(ArtifactError, match="sha256"):
        ServedModel(ServeConfig(export_dir=copy))
    with pytest.raises(ArtifactError, match="no fp16 variant"):
        ServedModel(ServeConfig(export_dir=tiny_export, variant=Variant.FP16))


def test_the_preprocess_variant_takes_uint8_images_and_answers_as_predict(
    tiny_preprocess_export: Path, samples: list[np.ndarray]
) -> None:
    model = ServedModel(ServeConfig(export_dir=tiny_preprocess_export, variant=Variant.PREPROCESS))
    assert model.metadata()["inputs"] == [
        {"name": "image", "datatype": "UINT8", "shape": [-1, 64, 64, 3]}
    ]
    assert model.output_names == ("logits", "probabilities")
    api = CountingAPI(model)
    classifier = Classifier(tiny_preprocess_export)  # fp32 graph, preprocessing in numpy
    expected = classifier.classify(samples, ["china", "flower"], top_k=3)
    for rgb, want in zip(samples, expected, strict=True):
        png = _encoded(rgb, "PNG")
        response = api("POST", "/models/resnext14_8x4d/classify", png, query={"top_k": "3"})
        top = json.loads(response.body)["top"]
        assert [t["label"] for t in top] == list(want.labels)
        # The graph normalises as (x - 255 mean) / (255 std): equal up to float rounding.
        np.testing.assert_allclose(
            [t["probability"] for t in top], want.probabilities, rtol=0, atol=1e-5
        )
