"""The two stages Ray Data runs: decoding (tasks) and inference (an actor pool). Plain numpy,
Pillow and onnxruntime, exactly as ``predict`` reads and classifies a file: Ray only calls them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import DataError
from resnext_deploy.predict import Classifier, model_input, read_image, top_predictions
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.providers import SessionConfig
from resnext_deploy.spec import ModelSpec

Batch = dict[str, np.ndarray]


def decode_batch(batch: Batch, spec: ModelSpec, takes_images: bool) -> Batch:
    """Rows ``index``, ``path`` to rows with the model's ``pixels`` and an ``error`` ("" when
    the image was read): an unreadable file is one row's error, never the batch's."""
    shape, dtype = _input_layout(spec, takes_images)
    pixels: np.ndarray = np.zeros((len(batch["path"]), *shape), dtype)
    errors = []
    for row, path in enumerate(batch["path"]):
        try:
            pixels[row] = model_input([read_image(Path(str(path)), spec)], spec, takes_images)[0]
            errors.append("")
        except DataError as exc:
            errors.append(str(exc))
    return {
        "index": np.asarray(batch["index"], np.int64),
        "path": np.asarray(batch["path"], dtype=object),
        "pixels": pixels,
        "error": np.asarray(errors, dtype=object),
    }


def _input_layout(spec: ModelSpec, takes_images: bool) -> tuple[tuple[int, ...], type]:
    side = spec.input_size
    return ((side, side, 3), np.uint8) if takes_images else ((3, side, side), np.float32)


class Inference:
    """One session of onnxruntime or OpenVINO (an actor of the pool): decoded rows to result
    rows."""

    def __init__(
        self,
        model: bytes,
        spec: ModelSpec,
        session: SessionConfig,
        top_k: int,
        model_sha256: str,
        engine: Engine = Engine.ONNXRUNTIME,
    ) -> None:
        self.classifier = Classifier(model, session, spec, engine)
        self.top_k = top_k
        self.model_sha256 = model_sha256

    def __call__(self, batch: Batch) -> Any:
        import pyarrow as pa

        errors = [str(e) for e in batch["error"]]
        good = [i for i, e in enumerate(errors) if not e]
        labels: list[list[str] | None] = [None] * len(errors)
        indices: list[list[int] | None] = [None] * len(errors)
        probabilities: list[list[float] | None] = [None] * len(errors)
        if good:
            probs = self.classifier.batch_probabilities(np.asarray(batch["pixels"])[good])
            names = [str(batch["path"][i]) for i in good]
            for row, top in zip(
                good, top_predictions(probs, self.classifier.labels, names, self.top_k), strict=True
            ):
                labels[row] = list(top.labels)
                indices[row] = list(top.indices)
                probabilities[row] = list(top.probabilities)
        return pa.table(
            {
                "index": pa.array(np.asarray(batch["index"], np.int64)),
                "path": pa.array([str(p) for p in batch["path"]], pa.string()),
                "labels": pa.array(labels, pa.list_(pa.string())),
                "class_indices": pa.array(indices, pa.list_(pa.int32())),
                "probabilities": pa.array(probabilities, pa.list_(pa.float64())),
                "error": pa.array([e or None for e in errors], pa.string()),
                "model_sha256": pa.array([self.model_sha256] * len(errors), pa.string()),
            }
        )
