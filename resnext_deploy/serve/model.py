"""The model one replica serves: a checked export's variant in an onnxruntime session built
through the provider guard (or on OpenVINO's CPU plugin), its tensors as the protocol describes
them, and the image path that preprocesses exactly as ``predict`` does. Ray-free, so it is
tested without a cluster."""

from __future__ import annotations

import numpy as np

from resnext_deploy.artifact import OUTPUT_NAME, InputFormat, open_artifact
from resnext_deploy.errors import ArtifactError
from resnext_deploy.predict import Prediction, softmax, top_predictions
from resnext_deploy.preprocess import preprocess, resize_and_crop
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.base import TensorInfo
from resnext_deploy.runtime.engines import open_runner
from resnext_deploy.runtime.providers import CudaOptions, Provider, SessionConfig
from resnext_deploy.serve.config import ServeConfig
from resnext_deploy.serve.protocol import ORT_TO_V2, TensorSpec

# Triton's names: the platform and backend that run an ONNX file on each engine
PLATFORMS = {Engine.ONNXRUNTIME: "onnxruntime_onnx", Engine.OPENVINO: "openvino"}
BACKENDS = {Engine.ONNXRUNTIME: "onnxruntime", Engine.OPENVINO: "openvino"}


def session_config(config: ServeConfig) -> SessionConfig:
    """The session a replica runs. On CUDA: TF32 off, because ``verify`` checks CUDA parity
    with TF32 off and the server must run what was verified; cuDNN's ``HEURISTIC`` algorithm
    choice, because dynamic batching feeds every batch size from 1 to the maximum and the
    default exhaustive search would time each new size on a user's request."""
    return SessionConfig(
        provider=config.provider,
        cuda=CudaOptions(use_tf32=False, cudnn_conv_algo_search="HEURISTIC"),
        intra_op_threads=config.threads,
    )


def _tensor(meta: TensorInfo) -> TensorSpec:
    if meta.type not in ORT_TO_V2:
        raise ArtifactError(
            f"tensor {meta.name!r} has type {meta.type}, which this server cannot carry"
        )
    return TensorSpec(meta.name, ORT_TO_V2[meta.type], meta.shape)


class ServedModel:
    """Opens ``config.export_dir`` (checked against its manifest), loads the variant and
    describes its tensors. Raises :class:`ArtifactError` for a missing, modified or unsuitable
    export and :class:`ProviderUnavailableError` when the provider cannot start."""

    def __init__(self, config: ServeConfig) -> None:
        artifact = open_artifact(config.export_dir, check_hashes=config.check_hashes)
        path = artifact.require(config.variant)
        self.spec = artifact.spec
        self.labels = self.spec.labels()
        self.name = config.name_for(self.spec.arch)
        self.variant = config.variant
        self.max_batch_size = config.max_batch_size
        self.engine, self.provider = config.engine, config.provider
        self.runner = open_runner(
            path, config.engine, session_config(config), name=f"serve-{self.name}"
        )
        if len(self.runner.inputs) != 1:
            raise ArtifactError(
                f"{path} has {len(self.runner.inputs)} inputs; a served model needs one"
            )
        self.input = _tensor(self.runner.inputs[0])
        self.outputs = tuple(_tensor(o) for o in self.runner.outputs)
        if self.input.shape[0] != -1 or -1 in self.input.shape[1:]:
            raise ArtifactError(
                f"{path}: the input needs a dynamic batch axis and fixed other axes"
            )
        if OUTPUT_NAME not in self.output_names:
            raise ArtifactError(f"{path} has no {OUTPUT_NAME!r} output")

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Every output of the model for ``batch`` (run whole, in one session call)."""
        values = self.runner.run_outputs(batch)
        return dict(zip(self.output_names, values, strict=True))

    def image_rows(self, rgb: np.ndarray) -> np.ndarray:
        """One image as a batch of one model input, preprocessed as ``predict`` does (the
        graph with preprocessing inside takes the resized, cropped uint8 pixels)."""
        if self.variant.input_format is InputFormat.UINT8_IMAGE:
            return resize_and_crop(rgb, self.spec)[None]
        return preprocess([rgb], self.spec)

    def top_k(self, outputs: dict[str, np.ndarray], name: str, k: int) -> Prediction:
        """Top-``k`` labels and probabilities of one image, from its logits as ``predict``."""
        probs = softmax(outputs[OUTPUT_NAME].astype(np.float64))
        return top_predictions(probs, self.labels, [name], k)[0]

    def warm_up(self) -> None:
        """Run batch 1 (and, on a GPU, the largest batch) once, so that session start-up and
        cuDNN's algorithm choice do not land on the first user request."""
        sizes = (1, self.max_batch_size) if self.provider is not Provider.CPU else (1,)
        for size in sizes:
            self.run(np.zeros((size, *self.input.shape[1:]), dtype=self.input.dtype))

    def metadata(self) -> dict[str, object]:
        """The protocol's model metadata (``GET /v2/models/<name>``)."""
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": PLATFORMS[self.engine],
            "inputs": [self.input.to_dict()],
            "outputs": [o.to_dict() for o in self.outputs],
        }

    def triton_config(self) -> dict[str, object]:
        """Triton's model configuration in its JSON form (``GET /v2/models/<name>/config``)."""

        def tensor(t: TensorSpec) -> dict[str, object]:
            return {"name": t.name, "data_type": f"TYPE_{t.datatype}", "dims": list(t.shape[1:])}

        return {
            "name": self.name,
            "platform": PLATFORMS[self.engine],
            "backend": BACKENDS[self.engine],
            "max_batch_size": self.max_batch_size,
            "input": [tensor(self.input)],
            "output": [tensor(o) for o in self.outputs],
        }

    def close(self) -> None:
        self.runner.close()
