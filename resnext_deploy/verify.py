"""Parity of an export directory: eager (from its weights) vs TorchScript vs onnxruntime."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from torch import nn

from resnext_deploy.artifact import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    Artifact,
    Tolerance,
    Variant,
)
from resnext_deploy.errors import (
    ArtifactError,
    ConfigError,
    DataError,
    DeployError,
    ParityError,
    ProviderUnavailableError,
    first_line,
)
from resnext_deploy.parity import ParityInput, ParityReport, compare, random_inputs
from resnext_deploy.preprocess import load_image, normalize, preprocess
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
)
from resnext_deploy.spec import ModelSpec
from resnext_deploy.validate import check_int

if TYPE_CHECKING:
    from resnext_deploy.runtime.openvino import OpenVinoRunner

DEFAULT_BATCH_SIZES = (1, 2, 3, 8)
MAX_BATCH_SIZE = 1024  # a parity batch runs eager, TorchScript and onnxruntime at once
MAX_SEED = 2**32 - 1  # numpy's seeds
# TensorRT computes fp32 layers in TF32 (10 mantissa bits, as fp16 has) and onnxruntime has no
# option to switch that off, so TensorRT's fp32 results are held to the fp16 tolerance.
TF32_TOLERANCE = FP16_TOLERANCE


@dataclass(frozen=True, kw_only=True)
class VerifyConfig:
    """Which inputs to compare on and which providers to include.

    ``providers`` lists the onnxruntime providers that must run; ``auto_cuda`` also tries CUDA and
    records why it was skipped when the machine has no usable GPU. ``engines``: onnxruntime
    always runs; with OpenVINO listed, every variant also runs on OpenVINO's CPU plugin, each
    held to its variant's tolerance.
    """

    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    images: tuple[Path, ...] = ()
    seed: int = 0
    providers: tuple[Provider, ...] = (Provider.CPU,)
    auto_cuda: bool = True
    tolerance: Tolerance = FP32_TOLERANCE
    engines: tuple[Engine, ...] = (Engine.ONNXRUNTIME,)

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise ConfigError("give at least one batch size to verify with")
        for size in self.batch_sizes:
            check_int(size, "a verify batch size", 1, MAX_BATCH_SIZE)
        check_int(self.seed, "the verify seed", 0, MAX_SEED)


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
                f"{len(files)} user images",
                preprocess([load_image(f, spec) for f in files], spec),
            )
        )
    return inputs


def compare_model_with_files(
    model: nn.Module,
    spec: ModelSpec,
    directory: Path,
    config: VerifyConfig,
    variants: tuple[Variant, ...] = (Variant.FP32,),
) -> ParityReport:
    """Compare the eager ``model`` with the TorchScript file and the ONNX ``variants`` in
    ``directory`` (fp32 always; the others each with the tolerance that fits them). Raises
    :class:`ArtifactError` for an ONNX file onnxruntime cannot load or whose embedded spec is
    not ``spec``."""
    from resnext_deploy.runtime.openvino import OpenVinoRunner
    from resnext_deploy.runtime.ort import OrtRunner
    from resnext_deploy.runtime.torch_runners import EagerRunner, TorchScriptRunner

    with ExitStack() as stack:
        candidates: list[tuple[Runner, Tolerance]] = []
        for optimize in (False, True):
            script = TorchScriptRunner(directory / TORCHSCRIPT_FILE, optimize=optimize)
            candidates.append((stack.enter_context(script), config.tolerance))
        inputs = parity_inputs(spec, config)
        fp32 = _start_fp32_sessions(stack, directory, config, inputs)
        candidates += fp32.candidates
        for runner, tolerance in _variant_runners(directory, variants, fp32.started):
            candidates.append((stack.enter_context(runner), tolerance))
        if Engine.OPENVINO in config.engines:
            for runner, tolerance in _openvino_runners(directory, variants):
                candidates.append((stack.enter_context(runner), tolerance))
        for runner, _ in candidates:
            if isinstance(runner, OrtRunner | OpenVinoRunner):  # labels and sizes all rely on
                runner.embedded_spec(spec)
        reference = stack.enter_context(EagerRunner(model))
        report = compare(reference, candidates, inputs)
        report.placements = {
            r.name: r.placement()
            for r, _ in candidates
            if isinstance(r, OrtRunner) and r.config.provider is not Provider.CPU
        }
        if Variant.PREPROCESS in variants:
            uint8 = _compare_preprocess_graph(stack, reference, directory, spec, config)
            report.backends += uint8.backends
            report.inputs += [f"{name} (uint8 NHWC)" for name in uint8.inputs]
        report.skipped = fp32.skipped
    return report


@dataclass(frozen=True)
class _Fp32Sessions:
    """The fp32 ONNX file on each provider that started (``started``: provider -> its session
    config, for the other variants) and why an optional provider was skipped."""

    candidates: list[tuple[Runner, Tolerance]] = field(default_factory=list)
    started: dict[Provider, SessionConfig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _start_fp32_sessions(
    stack: ExitStack, directory: Path, config: VerifyConfig, inputs: list[ParityInput]
) -> _Fp32Sessions:
    """One onnxruntime runner per provider asked for (a failure raises) plus CUDA when
    ``auto_cuda`` (a failure is recorded as skipped), each entered on ``stack``."""
    from resnext_deploy.runtime.ort import OrtRunner

    wanted = list(config.providers)
    if config.auto_cuda and Provider.CUDA not in wanted:
        wanted.append(Provider.CUDA)
    sessions = _Fp32Sessions()
    for provider in wanted:
        session = _session_config(provider, inputs)
        try:
            runner = OrtRunner(directory / Variant.FP32.file, session)
        except ProviderUnavailableError as exc:
            if provider in config.providers:
                raise
            sessions.skipped[f"onnxruntime-{provider.value}"] = str(exc)
            continue
        sessions.started[provider] = session
        tolerance = TF32_TOLERANCE if provider is Provider.TENSORRT else config.tolerance
        sessions.candidates.append((stack.enter_context(runner), tolerance))
    return sessions


def _compare_preprocess_graph(
    stack: ExitStack, reference: Runner, directory: Path, spec: ModelSpec, config: VerifyConfig
) -> ParityReport:
    """The graph with the preprocessing inside, fed uint8 NHWC images, against ``reference``
    behind the Python preprocessing: both halves of the deployed path at once (on OpenVINO
    too when ``config`` lists it)."""
    from resnext_deploy.runtime.ort import OrtRunner

    path = directory / Variant.PREPROCESS.file
    runners: list[OrtRunner | OpenVinoRunner] = [OrtRunner(path, name="onnxruntime-cpu-preproc")]
    if Engine.OPENVINO in config.engines:
        runners.append(_openvino_runner(path, Variant.PREPROCESS))
    for runner in runners:
        stack.enter_context(runner)
        runner.embedded_spec(spec)
    return compare(
        NormalizingRunner(reference, spec),
        [(runner, config.tolerance) for runner in runners],
        uint8_inputs(spec, config),
    )


def _session_config(provider: Provider, inputs: list[ParityInput]) -> SessionConfig:
    """TF32 off on CUDA: it rounds conv inputs to 10 mantissa bits, fine for serving, but parity
    is a statement about fp32. TensorRT gets a profile covering every batch compared."""
    batches = tuple(sorted({len(i.batch) for i in inputs}))
    return SessionConfig(
        provider=provider,
        cuda=CudaOptions(use_tf32=False),
        tensorrt=TensorRTOptions(batch_sizes=batches),
    )


def _variant_runners(
    directory: Path, variants: tuple[Variant, ...], started: dict[Provider, SessionConfig]
) -> Iterator[tuple[Runner, Tolerance]]:
    """fp16 on every provider whose fp32 session started (``started``: provider -> its session
    config), int8 on the CPU: each a backend of its own with the tolerance that fits it."""
    from resnext_deploy.runtime.ort import OrtRunner

    for variant in (Variant.FP16, Variant.INT8):
        if variant not in variants:
            continue
        providers = list(started) if variant is Variant.FP16 else [Provider.CPU]
        for provider in providers:
            session = started.get(provider) or SessionConfig()
            name = f"onnxruntime-{provider.value}{variant.suffix}"
            try:
                runner = OrtRunner(directory / variant.file, session, name=name)
            except DeployError as exc:  # onnxruntime's own errors arrive as ArtifactError
                where = f"onnxruntime's {provider.value} provider"
                raise unverifiable(variant, where, exc) from None
            yield runner, variant.tolerance


def unverifiable(variant: Variant, where: str, exc: BaseException) -> ParityError:
    """The error for a variant that cannot run on ``where``: an unverifiable variant is not a
    verified one, so it is refused rather than skipped."""
    return ParityError(
        f"the {variant.value} variant cannot run on {where}, so it cannot be verified: "
        f"{first_line(exc, 200)}"
    )


def _openvino_runners(
    directory: Path, variants: tuple[Variant, ...]
) -> Iterator[tuple[Runner, Tolerance]]:
    """Every ONNX variant taking the normalised batch on OpenVINO's CPU plugin (f32 hint), each
    held to its variant's tolerance; the graph with the preprocessing inside is compared on its
    uint8 inputs (:func:`_compare_preprocess_graph`)."""
    for variant in dict.fromkeys((Variant.FP32, *variants)):
        if variant is not Variant.PREPROCESS:
            yield _openvino_runner(directory / variant.file, variant), variant.tolerance


def _openvino_runner(path: Path, variant: Variant) -> OpenVinoRunner:
    from resnext_deploy.runtime.openvino import OpenVinoRunner

    try:
        return OpenVinoRunner(path, name=f"openvino-cpu{variant.suffix}")
    except ArtifactError as exc:  # OpenVINO's own errors arrive as ArtifactError
        raise unverifiable(variant, "OpenVINO", exc) from None


class NormalizingRunner(Runner):
    """Feeds uint8 NHWC images through the Python preprocessing into another runner: the
    reference for a graph that does its own preprocessing."""

    def __init__(self, inner: Runner, spec: ModelSpec) -> None:
        self.inner, self.spec, self.name = inner, spec, f"{inner.name} + python preprocessing"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.inner.infer(normalize(batch, self.spec))


def uint8_inputs(spec: ModelSpec, config: VerifyConfig) -> list[ParityInput]:
    """Seeded random uint8 images at each batch size, plus the user's images resized."""
    rng = np.random.default_rng(config.seed)
    size = spec.input_size
    inputs = [
        ParityInput(f"random batch={b}", rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8))
        for b in config.batch_sizes
    ]
    if config.images:
        from resnext_deploy.preprocess import list_images, resize_and_crop

        files = list_images(list(config.images))
        images = np.stack([resize_and_crop(load_image(f), spec) for f in files])
        inputs.append(ParityInput(f"{len(files)} user images", images))
    return inputs


def verify_artifact(artifact: Artifact, config: VerifyConfig = VerifyConfig()) -> ParityReport:
    """Rebuild the eager model from the export's weights and compare every backend with it."""
    from resnext_deploy.models.checkpoint import read_checkpoint
    from resnext_deploy.models.registry import build_model

    spec = artifact.spec
    model = build_model(spec.architecture(), spec.num_classes)
    model.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict, strict=True)
    return compare_model_with_files(model, spec, artifact.path, config, artifact.variants)
