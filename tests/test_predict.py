"""``predict`` gives the probabilities a torchvision-transforms + plain-onnxruntime pipeline gives,
on real colour photographs written to disk as PNG and JPEG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from resnext_deploy.predict import Classifier, predict_paths
from tests.photos import write_photos


def _reference_probabilities(model: Path, files: list[Path]) -> np.ndarray:
    """The pipeline a torchvision user would write, reading the spec straight from the ONNX
    metadata: PIL -> Resize -> CenterCrop -> ToImage -> ToDtype -> Normalize -> onnxruntime."""
    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    spec = json.loads(props["resnext_deploy.spec"])
    transform = v2.Compose(
        [
            v2.Resize(spec["resize"]),
            v2.CenterCrop(spec["input_size"]),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(spec["mean"], spec["std"]),
        ]
    )
    batch = []
    for f in files:
        with Image.open(f) as img:
            batch.append(transform(img.convert("RGB")).numpy())
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: np.stack(batch)})
    z = logits.astype(np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_predict_equals_torchvision_and_plain_onnxruntime(
    tiny_export: Path, tmp_path: Path, suffix: str
) -> None:
    files = write_photos(tmp_path / "photos", suffix)
    model = tiny_export / "model.onnx"
    expected = _reference_probabilities(model, files)

    classifier = Classifier(tiny_export)
    result = predict_paths(classifier, [tmp_path / "photos"], top_k=7, batch_size=3)
    assert not result.failures and len(result.predictions) == len(files)
    by_file = {p.file: p for p in result.predictions}
    got = np.zeros_like(expected)
    for row, f in enumerate(files):
        pred = by_file[str(f)]
        got[row, list(pred.indices)] = pred.probabilities
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # The photos differ enough for the comparison to mean something.
    assert float(np.abs(expected - expected[0]).max()) > 1e-3
