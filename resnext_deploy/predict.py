"""Classify images with an exported ONNX model using only onnxruntime (or OpenVINO), numpy and
Pillow.

This module never imports torch: it is what a service without PyTorch runs, and the reference for
embedding the model in another language. Preprocessing comes from the model's own metadata.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from resnext_deploy.artifact import Variant, open_model_file
from resnext_deploy.errors import ArtifactError, ConfigError, DataError, DeployError
from resnext_deploy.machine.cpu import cpu_info
from resnext_deploy.preprocess import list_images, load_image, preprocess, resize_and_crop
from resnext_deploy.recommendation import Engine, EngineChoice, Pick
from resnext_deploy.runtime.engines import open_runner
from resnext_deploy.runtime.providers import Provider, SessionConfig
from resnext_deploy.spec import ModelSpec
from resnext_deploy.validate import check_int, regular_file

MAX_TOP_K = 1000
MAX_BATCH_SIZE = 1024
UINT8_INPUT = "tensor(uint8)"  # the graph with the preprocessing inside takes RGB bytes


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
    """An ONNX classifier with its spec; ``classify`` takes RGB uint8 images of any size.

    ``model`` is an ONNX file or an export folder; a file of an export (the folder, or a file in
    a folder holding a manifest) is checked against the manifest first (``artifact``). The graph
    with the preprocessing inside (uint8 images in) is fed resized images; the others the
    normalised batch. ``engine`` runs it: onnxruntime on ``session``'s provider, or OpenVINO on
    the CPU with ``session``'s threads.
    """

    def __init__(
        self,
        model: str | Path | bytes,
        session: SessionConfig = SessionConfig(),
        spec: ModelSpec | None = None,
        engine: Engine = Engine.ONNXRUNTIME,
    ) -> None:
        """``model`` may also be the bytes of an ONNX file (one an export's manifest vouched
        for, sent to another process), with the ``spec`` it must embed."""
        if isinstance(model, bytes):
            self.path: Path | None = None
            self.artifact = None
        else:
            self.path, self.artifact = open_model_file(model)
            _check_model_path(self.path)
            spec = self.artifact.spec if self.artifact else spec
        self.engine = engine
        self.runner = open_runner(model if self.path is None else self.path, engine, session)
        try:
            self.spec = self.runner.embedded_spec(spec)
        except DeployError:
            self.runner.close()
            raise
        self.labels = self.spec.labels()
        self.takes_images = self.runner.input_type == UINT8_INPUT

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def probabilities(self, images: list[np.ndarray]) -> np.ndarray:
        return self.batch_probabilities(model_input(images, self.spec, self.takes_images))

    def batch_probabilities(self, batch: np.ndarray) -> np.ndarray:
        """Softmax of the logits of ``batch``, a :func:`model_input` batch (which may have been
        made elsewhere: ``predict --ray`` decodes in other processes)."""
        logits = self.runner.infer(batch)
        if logits.shape != (len(batch), len(self.labels)):
            raise ArtifactError(
                f"{self.runner.source} returned logits of shape {logits.shape} for "
                f"{len(batch)} images; its spec has {len(self.labels)} classes: the model and "
                "its metadata disagree"
            )
        return softmax(logits.astype(np.float64))

    def classify(
        self, images: list[np.ndarray], names: list[str], top_k: int = 5
    ) -> list[Prediction]:
        return top_predictions(self.probabilities(images), self.labels, names, top_k)


@dataclass(frozen=True)
class EngineDecision:
    """What runs: the ``model`` file (or folder) on ``engine``. With ``--engine auto`` also the
    recorded ``pick``, the batch size it was measured at and the CPU it was measured on."""

    model: str | Path
    engine: Engine
    pick: Pick | None = None
    measured_batch: int | None = None
    measured_on: str | None = None

    def notes(self) -> list[str]:
        """What ``auto`` chose and why, and a warning when it was measured on another CPU."""
        if self.pick is None:
            return []
        lines = [
            f"engine auto: {self.engine.value} runs the {self.pick.variant} variant, measured "
            f"fastest at batch {self.measured_batch} ({self.pick.p50_ms:.1f} ms) on "
            f"{self.measured_on}"
        ]
        here = cpu_info().label
        if self.measured_on != here:
            lines.append(
                f"warning: that was measured on {self.measured_on}, and this machine is {here}; "
                "measure again here (bench --engines --record) to choose by this machine"
            )
        return lines


def choose_engine(
    model: str | Path, choice: EngineChoice, batch_size: int, provider: Provider = Provider.CPU
) -> EngineDecision:
    """The file and engine ``choice`` means for ``model``: an engine named runs ``model`` as
    given; ``auto`` runs the variant and engine the export's manifest records as fastest for
    ``batch_size`` (:meth:`~resnext_deploy.artifact.Artifact.recommended`). Raises
    :class:`ConfigError` for ``auto`` without an export folder or without a record, and for
    ``auto`` with a GPU provider (the record is the CPU's)."""
    engine = choice.engine
    if engine is not None:
        return EngineDecision(model, engine)
    if provider is not Provider.CPU:
        raise ConfigError(
            "--engine auto follows what was measured on the CPU; with --provider "
            f"{provider.value} name the engine (onnxruntime)"
        )
    folder = Path(model)
    _, artifact = open_model_file(folder)
    if artifact is None or not folder.is_dir():
        raise ConfigError(
            "--engine auto chooses the export's file and engine from its manifest: pass the "
            f"export folder, not {model}"
        )
    measured, pick = artifact.recommended(batch_size)
    record = artifact.manifest.recommendation
    return EngineDecision(
        artifact.require(Variant(pick.variant)),
        pick.engine,
        pick,
        measured,
        record.cpu if record else None,
    )


def model_input(images: list[np.ndarray], spec: ModelSpec, takes_images: bool) -> np.ndarray:
    """The batch a model takes for RGB uint8 ``images``: resized and cropped uint8 pixels for
    the graph with the preprocessing inside (``takes_images``), else the normalised float32
    batch."""
    if takes_images:
        return np.stack([resize_and_crop(image, spec) for image in images])
    return preprocess(images, spec)


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


def _check_model_path(path: Path) -> None:
    """Refuse what onnxruntime cannot be handed: a missing file, a FIFO or a device (reading it
    would block or never end), a PyTorch file."""
    if not path.exists():
        raise ArtifactError(f"ONNX model not found: {path}")
    regular_file(path, "ONNX model", ArtifactError)
    if path.suffix.lower() != ".onnx" and _is_zip(path):
        raise ArtifactError(
            f"{path} is a PyTorch file, not an ONNX model; export it first and pass the "
            "export directory or its model.onnx"
        )


def _is_zip(path: Path) -> bool:
    """torch.save's files (and TorchScript archives) are zip archives; ONNX files never are."""
    import zipfile

    return zipfile.is_zipfile(path)


def predict_paths(
    classifier: Classifier, paths: list[Path], top_k: int = 5, batch_size: int = 16
) -> PredictResult:
    """Classify every image under ``paths``; unreadable files are listed in ``failures``, and
    so is a FIFO, socket or device found in a folder (reading it could block forever). Raises
    :class:`DataError` for one named explicitly, as for any other option that cannot work, and
    :class:`ConfigError` for a ``top_k`` or ``batch_size`` out of range."""
    check_int(top_k, "top_k", 1, MAX_TOP_K)
    check_int(batch_size, "the predict batch size", 1, MAX_BATCH_SIZE)
    for path in paths:
        if path.exists() and not path.is_dir():
            regular_file(path, "image", DataError)
    files = list_images(paths)
    result = PredictResult()
    if not files:
        raise DataError(f"no images found in {', '.join(map(str, paths))}")
    for batch in _batches(files, batch_size, classifier.spec, result.failures):
        images, names = zip(*batch, strict=True)
        result.predictions += classifier.classify(list(images), list(names), top_k)
    return result


def read_image(path: Path, spec: ModelSpec) -> np.ndarray:
    """One image file as RGB uint8, refused (:class:`DataError` naming the file) as ``predict``
    refuses it: missing, not a regular file (a FIFO could block forever), unreadable, a bomb,
    or too large once resized to ``spec``."""
    if path.exists():  # a missing file is load_image's to report
        regular_file(path, "image", DataError)
    return load_image(path, spec)


def _batches(
    files: list[Path], size: int, spec: ModelSpec, failures: list[str]
) -> Iterator[list[tuple[np.ndarray, str]]]:
    batch: list[tuple[np.ndarray, str]] = []
    for f in files:
        try:
            batch.append((read_image(f, spec), str(f)))
        except DataError as exc:
            failures.append(str(exc))
            continue
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
