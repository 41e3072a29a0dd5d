"""Parity of an export directory: eager (from its weights) vs TorchScript vs onnxruntime."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from resnext_deploy.errors import DataError, ProviderUnavailableError
from resnext_deploy.export.manifest import ONNX_FILE, TORCHSCRIPT_FILE, WEIGHTS_FILE, Artifact
from resnext_deploy.parity import FP32, ParityInput, ParityReport, Tolerance, compare, random_inputs
from resnext_deploy.preprocess import load_image, preprocess
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import Provider, SessionConfig
from resnext_deploy.spec import ModelSpec

DEFAULT_BATCH_SIZES = (1, 2, 3, 8)


@dataclass(frozen=True)
class VerifyConfig:
    """Which inputs to compare on and which providers to include.

    ``providers`` lists the onnxruntime providers that must run; ``auto_cuda`` also tries CUDA and
    records why it was skipped when the machine has no usable GPU.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    images: tuple[Path, ...] = ()
    seed: int = 0
    providers: tuple[Provider, ...] = (Provider.CPU,)
    auto_cuda: bool = True
    tolerance: Tolerance = field(default_factory=lambda: FP32)


def parity_inputs(spec: ModelSpec, config: VerifyConfig) -> list[ParityInput]:
    """Seeded random batches plus, when given, the user's images through the real preprocessing."""
    inputs = random_inputs(config.batch_sizes, spec.input_size, config.seed)
    if config.images:
        from resnext_deploy.preprocess import list_images

        files = list_images(list(config.images))
        if not files:
            raise DataError(f"no images found in {', '.join(map(str, config.images))}")
        inputs.append(
            ParityInput(
                f"{len(files)} user images", preprocess([load_image(f) for f in files], spec)
            )
        )
    return inputs


def compare_model_with_files(
    model: nn.Module, spec: ModelSpec, directory: Path, config: VerifyConfig
) -> ParityReport:
    """Compare the eager ``model`` with the TorchScript and ONNX files in ``directory``."""
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.torch_runners import EagerRunner, TorchScriptRunner

    candidates: list[tuple[Runner, Tolerance]] = [
        (TorchScriptRunner(directory / TORCHSCRIPT_FILE), config.tolerance),
        (TorchScriptRunner(directory / TORCHSCRIPT_FILE, optimize=True), config.tolerance),
    ]
    skipped: dict[str, str] = {}
    wanted = list(config.providers)
    if config.auto_cuda and Provider.CUDA not in wanted:
        wanted.append(Provider.CUDA)
    for provider in wanted:
        try:
            runner = OrtRunner(directory / ONNX_FILE, SessionConfig(provider=provider))
        except ProviderUnavailableError as exc:
            if provider in config.providers:
                raise
            skipped[f"onnxruntime-{provider.value}"] = str(exc)
            continue
        candidates.append((runner, config.tolerance))
    report = compare(EagerRunner(model), candidates, parity_inputs(spec, config))
    report.skipped = skipped
    for runner, _ in candidates:
        runner.close()
    return report


def verify_artifact(artifact: Artifact, config: VerifyConfig = VerifyConfig()) -> ParityReport:
    """Rebuild the eager model from the export's weights and compare every backend with it."""
    from resnext_deploy.models.checkpoint import read_checkpoint
    from resnext_deploy.models.registry import build_model

    spec = artifact.spec
    model = build_model(spec.architecture(), spec.num_classes)
    model.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict, strict=True)
    return compare_model_with_files(model, spec, artifact.path, config)
