"""``serve --engine openvino``: a real server whose replica runs OpenVINO answers the colour
photos as ``predict`` on onnxruntime does (fp32: probabilities within 1e-5)."""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.predict import Classifier, predict_paths
from tests.photos import colour_photos
from tests.serve.running import free_port, serving
from tests.serve.test_server import Server, _http

pytest.importorskip("openvino")
MODEL = "resnext14_8x4d"


@pytest.fixture(scope="module")
def openvino_server(
    tiny_every_variant: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    port, metrics_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("serve-openvino") / "serve.log"
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": ""}
    command = [
        sys.executable, "-m", "resnext_deploy", "serve", str(tiny_every_variant),
        "--engine", "openvino", "--host", "127.0.0.1", "--port", str(port),
        "--metrics-port", str(metrics_port), "--max-batch-size", "4", "--threads", "1",
    ]  # fmt: skip
    with serving(command, log, env) as proc:
        yield Server(proc, port, metrics_port, log)


def test_the_openvino_replica_answers_colour_photos_as_onnxruntime_predict(
    openvino_server: Server, tiny_every_variant: Path, tmp_path: Path
) -> None:
    status, body = _http("GET", f"{openvino_server.url}/v2/models/{MODEL}")
    assert status == 200 and json.loads(body)["platform"] == "openvino"
    with Classifier(tiny_every_variant) as onnxruntime:
        for i, rgb in enumerate(colour_photos().values()):
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, format="PNG")
            path = tmp_path / f"photo{i}.png"
            path.write_bytes(buffer.getvalue())
            expected = predict_paths(onnxruntime, [path], top_k=3).predictions[0]
            status, body = openvino_server.post(
                f"/models/{MODEL}/classify?top_k=3", buffer.getvalue()
            )
            assert status == 200, body
            top = json.loads(body)["top"]
            assert [t["index"] for t in top] == list(expected.indices)
            np.testing.assert_allclose(
                [t["probability"] for t in top], expected.probabilities, rtol=0, atol=1e-5
            )
