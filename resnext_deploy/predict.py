"""Classify images with an exported ONNX model using only onnxruntime, numpy and Pillow.

This module never imports torch: it is what a service without PyTorch runs, and the reference for
embedding the model in another language. Preprocessing comes from the model's own metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnext_deploy.artifact import ONNX_FILE
from resnext_deploy.errors import ArtifactError, DataError, DeployError, first_line
from resnext_deploy.preprocess import list_images, load_image, preprocess
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import SessionConfig
from resnext_deploy.spec import SPEC_KEY, ModelSpec


@dataclass(frozen=True)
class Prediction:
    file: str
    labels: tuple[str, ...]
    indices: tuple[int, ...]
    probabilities: tuple[float, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "top": [
                {"label": lb, "index": i, "probability": p}
                for lb, i, p in zip(self.labels, self.indices, self.probabilities, strict=True)
            ],
        }


@dataclass
class PredictResult:
    predictions: list[Prediction] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "predictions": [p.to_dict() for p in self.predictions],
            "failures": self.failures,
        }


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Classifier:
    """An ONNX classifier with its spec; ``classify`` takes RGB uint8 images of any size."""

    def __init__(self, model: str | Path, session: SessionConfig = SessionConfig()) -> None:
        model = Path(model)
        if model.is_dir():
            model = model / ONNX_FILE
        if not model.is_file():
            raise ArtifactError(f"ONNX model not found: {model}")
        if model.suffix.lower() != ".onnx" and _is_zip(model):
            raise ArtifactError(
                f"{model} is a PyTorch file, not an ONNX model; export it first and pass the "
                "export directory or its model.onnx"
            )
        try:
            self.runner = OrtRunner(model, session)
        except DeployError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime's load errors have no common type
            raise ArtifactError(
                f"{model} is not a readable ONNX model ({first_line(exc)})"
            ) from None
        meta = self.runner.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise ArtifactError(f"{model} carries no resnext-deploy spec in its metadata")
        self.spec = ModelSpec.from_json(meta[SPEC_KEY])
        self.labels = self.spec.labels()

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        return softmax(self.runner.infer(preprocess(images, self.spec)).astype(np.float64))

    def classify(
        self, images: list[np.ndarray], names: list[str], top_k: int = 5
    ) -> list[Prediction]:
        return top_predictions(self.probabilities(images), self.labels, names, top_k)


def top_predictions(
    probs: np.ndarray, labels: list[str], names: list[str], top_k: int = 5
) -> list[Prediction]:
    """The ``top_k`` classes of each row of ``probs`` (ties keep the lower index first)."""
    k = min(top_k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        Prediction(
            name,
            tuple(labels[i] for i in row),
            tuple(int(i) for i in row),
            tuple(float(p[i]) for i in row),
        )
        for name, row, p in zip(names, order, probs, strict=True)
    ]


def _is_zip(path: Path) -> bool:
    """torch.save's files (and TorchScript archives) are zip archives; ONNX files never are."""
    import zipfile

    return zipfile.is_zipfile(path)


def predict_paths(
    classifier: Classifier, paths: list[Path], top_k: int = 5, batch_size: int = 16
) -> PredictResult:
    """Classify every image under ``paths``; unreadable files are listed in ``failures``."""
    files = list_images(paths)
    result = PredictResult()
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    for batch in _batches(files, batch_size, result.failures):
        images, names = zip(*batch, strict=True)
        result.predictions += classifier.classify(list(images), list(names), top_k)
    return result


def _batches(
    files: list[Path], size: int, failures: list[str]
) -> Iterator[list[tuple[np.ndarray, str]]]:
    batch: list[tuple[np.ndarray, str]] = []
    for f in files:
        try:
            batch.append((load_image(f), str(f)))
        except DataError as exc:
            failures.append(str(exc))
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
