"""`resnext-deploy serve` end to end: a local Ray started by the CLI on loopback, driven with
tritonclient's HTTP client and plain HTTP, compared with `predict`, stopped with SIGTERM.

The tests share one server (Ray starts once, ~15 s) and run in file order; the last one stops
it and checks that every process Ray started is gone."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.predict import Classifier, predict_paths, softmax
from resnext_deploy.preprocess import preprocess
from tests.serve.running import free_port, serving

triton = pytest.importorskip("tritonclient.http", reason="the serve tests need the [test] extra")
InferenceServerException = pytest.importorskip("tritonclient.utils").InferenceServerException

MODEL = "resnext14_8x4d"
MAX_BODY_MB = 2


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> triton.InferenceServerClient:
        return triton.InferenceServerClient(f"127.0.0.1:{self.port}", network_timeout=60)

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None):  # noqa: ANN201
        return _http("POST", self.url + path, body, headers or {})


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):  # noqa: ANN202
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = os.environ | {
        "RAY_USAGE_STATS_ENABLED": "0",  # no network beyond loopback
        "RAY_metrics_report_interval_ms": "1000",  # metrics reach the endpoint within seconds
        "RAY_ADDRESS": "",  # a local Ray, whatever the environment says
    }
    command = [
        sys.executable, "-m", "resnext_deploy", "serve", str(tiny_export),
        "--host", "127.0.0.1", "--port", str(port), "--metrics-port", str(metrics_port),
        "--max-batch-size", "4", "--batch-wait-ms", "50", "--max-body-mb", str(MAX_BODY_MB),
        "--threads", "1",
    ]  # fmt: skip
    with serving(command, log, env) as proc:
        yield Server(proc, port, metrics_port, log)


@pytest.fixture(scope="module")
def samples() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)


def _input(x: np.ndarray, binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def test_health_and_metadata_through_tritonclient(server: Server, tiny_export: Path) -> None:
    client = server.client()
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 7]}]
    assert client.get_model_config(MODEL)["max_batch_size"] == 4


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_infer_matches_predict(
    server: Server, tiny_export: Path, samples: list[np.ndarray], binary: bool
) -> None:
    classifier = Classifier(tiny_export)
    x = preprocess(samples, classifier.spec)
    outputs = [triton.InferRequestedOutput("logits", binary_data=binary)]
    result = server.client().infer(MODEL, [_input(x, binary)], outputs=outputs)
    logits = result.as_numpy("logits")
    assert logits.shape == (2, 7) and logits.dtype == np.float32
    np.testing.assert_allclose(
        softmax(logits.astype(np.float64)), classifier.probabilities(samples), rtol=0, atol=1e-5
    )
    top = server.client().infer(
        MODEL, [_input(x)], outputs=[triton.InferRequestedOutput("logits", class_count=2)]
    )
    best = [row[0].decode().split(":") for row in top.as_numpy("logits")]
    expected = classifier.classify(samples, ["china", "flower"], top_k=1)
    assert [(int(b[1]), b[2]) for b in best] == [(p.indices[0], p.labels[0]) for p in expected]


def test_image_endpoint_matches_predict(
    server: Server, tiny_export: Path, samples: list[np.ndarray], tmp_path: Path
) -> None:
    classifier = Classifier(tiny_export)
    for i, rgb in enumerate(samples):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
        path = tmp_path / f"sample{i}.jpg"
        path.write_bytes(buffer.getvalue())
        expected = predict_paths(classifier, [path], top_k=3).predictions[0]
        status, body = server.post(f"/models/{MODEL}/classify?top_k=3", buffer.getvalue())
        assert status == 200, body
        top = json.loads(body)["top"]
        assert [t["label"] for t in top] == list(expected.labels)
        np.testing.assert_allclose(
            [t["probability"] for t in top], expected.probabilities, rtol=0, atol=1e-5
        )


def test_bad_requests_get_4xx_and_the_server_keeps_serving(
    server: Server, samples: list[np.ndarray]
) -> None:
    infer = f"/v2/models/{MODEL}/infer"
    classify = f"/models/{MODEL}/classify"
    good = {"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.0] * 12288}
    jpeg = io.BytesIO()
    Image.fromarray(samples[0]).save(jpeg, format="JPEG")
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, format="PNG")
    cases = [
        (infer, b'{"inputs": [', 400, "not valid JSON"),
        (
            infer,
            json.dumps({"inputs": [good | {"name": "image"}]}).encode(),
            400,
            "unexpected input",
        ),
        (
            infer,
            json.dumps({"inputs": [good | {"shape": [1, 3, 32, 32]}]}).encode(),
            400,
            "does not fit",
        ),
        (
            infer,
            json.dumps({"inputs": [good | {"datatype": "FP16"}]}).encode(),
            400,
            "datatype 'FP16'",
        ),
        (infer, json.dumps({"inputs": [good | {"shape": [5, 3, 64, 64]}]}).encode(), 400, "1 to 4"),
        (classify, b"this is not an image", 400, "not a decodable"),
        (classify, jpeg.getvalue()[:2000], 400, "does not decode"),
        (classify, bomb.getvalue(), 400, "10000x10000"),
        (classify, b"\0" * (MAX_BODY_MB * 2**20 + 1), 413, "exceeds the limit"),
        (infer, b"{" + b" " * (MAX_BODY_MB * 2**20), 413, "exceeds the limit"),
    ]
    for path, body, status, message in cases:
        got, answer = server.post(path, body)
        assert got == status, (path, body[:40], answer[:300])
        assert message in json.loads(answer)["error"], answer
        # ... and the next good request still succeeds.
        ok, answer = server.post(infer, json.dumps({"inputs": [good]}).encode())
        assert ok == 200, answer
        assert len(json.loads(answer)["outputs"][0]["data"]) == 7
    # A body sent in chunks, with no Content-Length, is counted as it streams in.
    status, answer = _chunked(server, infer, MAX_BODY_MB * 2**20 + 1)
    assert status == 413 and "exceeds the limit" in json.loads(answer)["error"]
    ok, answer = server.post(infer, json.dumps({"inputs": [good]}).encode())
    assert ok == 200, answer
    with pytest.raises(InferenceServerException, match="unexpected input"):
        bad = triton.InferInput("pixels", [1, 3, 64, 64], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 3, 64, 64), np.float32))
        server.client().infer(MODEL, [bad])


def _chunked(server: Server, path: str, size: int) -> tuple[int, bytes]:
    import http.client

    def chunks() -> Iterator[bytes]:
        sent = 0
        while sent < size:
            piece = b" " * min(1 << 16, size - sent)
            sent += len(piece)
            yield piece

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=chunks(), encode_chunked=True)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_batches_form_under_concurrency_and_their_sizes_are_exported(
    server: Server, tiny_export: Path
) -> None:
    xs = np.random.default_rng(0).standard_normal((16, 1, 3, 64, 64)).astype(np.float32)
    reference = Classifier(tiny_export).runner.infer(xs[:, 0])
    before = _settled_metrics(server)

    def one(i: int) -> np.ndarray:
        return server.client().infer(MODEL, [_input(xs[i])]).as_numpy("logits")

    with ThreadPoolExecutor(8) as pool:
        results = np.concatenate(list(pool.map(one, range(16))))
    # Batched with strangers, every caller still gets the answer for its own image.
    np.testing.assert_allclose(results, reference, rtol=0, atol=1e-5)
    deadline = time.monotonic() + 60
    while True:
        after = _metrics(server)
        images = after.get("images", 0) - before.get("images", 0)
        if images >= 16 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert images == 16, (before, after)
    calls = after["+Inf"] - before.get("+Inf", 0)
    alone = after["1.0"] - before.get("1.0", 0)
    assert after["+Inf"] == after["count"]
    # 16 images in fewer than 16 onnxruntime calls: batches of more than one formed.
    assert alone < calls < 16, (before, after)


def _metrics(server: Server) -> dict[str, float]:
    """The batch-size histogram's cumulative buckets and count, and the images counter."""
    _, body = _http("GET", f"http://127.0.0.1:{server.metrics_port}/metrics")
    found: dict[str, float] = {}
    for line in body.decode().splitlines():
        value = float(line.rsplit(" ", 1)[-1]) if not line.startswith("#") else 0.0
        if line.startswith("ray_resnext_deploy_batch_images_bucket{"):
            key = line.split('le="', 1)[1].split('"', 1)[0]
        elif line.startswith("ray_resnext_deploy_batch_images_count{"):
            key = "count"
        elif line.startswith("ray_resnext_deploy_images_total{"):
            key = "images"
        else:
            continue
        found[key] = found.get(key, 0.0) + value
    return found


def _settled_metrics(server: Server) -> dict[str, float]:
    """Metrics once earlier requests have been reported (two equal scrapes a second apart)."""
    previous = _metrics(server)
    for _ in range(30):
        time.sleep(1.2)
        current = _metrics(server)
        if current == previous:
            return current
        previous = current
    return previous


def test_sigterm_stops_the_server_and_every_ray_process(server: Server) -> None:
    import psutil

    children = psutil.Process(server.proc.pid).children(recursive=True)
    assert any(c.name() == "raylet" for c in children)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=90) == 0, server.log.read_text()[-3000:]
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [p.pid for p in alive]
    assert b"stopped" in server.log.read_bytes()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
