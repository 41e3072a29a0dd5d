"""The backends ``bench`` can time, as names, and the factory that builds their runners.

Every backend is a runner of the one runtime family (:mod:`resnext_deploy.runtime`); the
benchmark only chooses which runners to build, with what options, on which files of an export.
TensorRT tunes its kernels for the profile's opt shape, so an onnxruntime backend on TensorRT
is built once per batch size, with an engine for that size alone (:attr:`BackendFactory.per_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import TORCHSCRIPT_FILE, Variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
)


class BenchBackend(StrEnum):
    EAGER = "eager"
    EAGER_AMP = "eager-amp"
    TORCHSCRIPT = "torchscript"
    TORCHSCRIPT_OPT = "torchscript-opt"
    ONNXRUNTIME = "onnxruntime"
    ONNXRUNTIME_FP16 = "onnxruntime-fp16"
    ONNXRUNTIME_INT8 = "onnxruntime-int8"
    COMPILE = "compile"
    COMPILE_AMP = "compile-amp"
    OPENVINO_F32 = "openvino-f32"
    OPENVINO_DEFAULT = "openvino-default"

    @property
    def variant(self) -> Variant | None:
        """The ONNX variant an onnxruntime backend runs; ``None`` for the others."""
        return {
            BenchBackend.ONNXRUNTIME: Variant.FP32,
            BenchBackend.ONNXRUNTIME_FP16: Variant.FP16,
            BenchBackend.ONNXRUNTIME_INT8: Variant.INT8,
        }.get(self)


DEFAULT_BACKENDS = (
    BenchBackend.EAGER,
    BenchBackend.TORCHSCRIPT,
    BenchBackend.TORCHSCRIPT_OPT,
    BenchBackend.ONNXRUNTIME,
)
PEER_BACKENDS = (BenchBackend.COMPILE, BenchBackend.OPENVINO_F32, BenchBackend.OPENVINO_DEFAULT)
OPENVINO_BACKENDS = (BenchBackend.OPENVINO_F32, BenchBackend.OPENVINO_DEFAULT)
CPU_ONLY_BACKENDS = OPENVINO_BACKENDS
GPU_ONLY_BACKENDS = (BenchBackend.EAGER_AMP, BenchBackend.COMPILE_AMP)


@dataclass(frozen=True, kw_only=True)
class BackendContext:
    """What every backend may need: the eager model, the export directory, provider, threads."""

    model: Any
    export_dir: Path
    provider: Provider = Provider.CPU
    threads: int = 1
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)

    @property
    def device(self) -> str:
        return "cpu" if self.provider is Provider.CPU else "cuda"

    def session_config(self, cuda: CudaOptions | None = None) -> SessionConfig:
        return SessionConfig(
            provider=self.provider,
            cuda=cuda or self.cuda,
            tensorrt=self.tensorrt,
            intra_op_threads=self.threads,
        )


@dataclass(frozen=True)
class BackendFactory:
    """Builds the runners of one measured backend, named as the report names it (lazily, so
    that on a GPU only one backend's memory is alive at a time). With ``build_for_batch`` each batch
    size is measured with a runner of its own (TensorRT: an engine tuned for that size).
    ``optional``: a variant the benchmark tries on its own (``--tune``), which may fail to start
    on this machine and is then recorded as such; a backend the user asked for that cannot start
    ends the benchmark (:func:`~resnext_deploy.bench.harness.sweep`)."""

    name: str
    build: Callable[[], Runner]
    build_for_batch: Callable[[int], Runner] | None = None
    optional: bool = False

    @property
    def per_batch(self) -> bool:
        return self.build_for_batch is not None

    def runner_for(self, batch_size: int) -> Runner:
        """The runner that measures ``batch_size``."""
        if self.build_for_batch is not None:
            return self.build_for_batch(batch_size)
        return self.build()


def backend_factory(kind: BenchBackend, ctx: BackendContext) -> BackendFactory:
    """How to build ``kind``; raises :class:`ConfigError` for a backend this context cannot run."""
    if kind in CPU_ONLY_BACKENDS and ctx.provider is not Provider.CPU:
        raise ConfigError(f"backend {kind.value} is measured on the CPU only")
    if kind in GPU_ONLY_BACKENDS and ctx.provider is Provider.CPU:
        raise ConfigError(f"backend {kind.value} needs a CUDA device")
    variant = kind.variant
    if variant is not None:
        path = ctx.export_dir / variant.file
        if not path.is_file():
            raise ConfigError(
                f"backend {kind.value} needs an export with the {variant.value} variant; "
                f"{path} is missing"
            )
        name = f"onnxruntime-{ctx.provider.value}{variant.suffix}"
        return _ort_factory(path, ctx.session_config(), name)
    return BackendFactory(_NAMES[kind], lambda: _torch_or_peer(kind, ctx))


def tuning_factories(
    ctx: BackendContext, variants: Mapping[str, CudaOptions] | Mapping[str, TensorRTOptions]
) -> list[BackendFactory]:
    """The fp32 onnxruntime backend once per option variant, named by the provider it runs on.

    Raises :class:`ConfigError` for CUDA-provider variants on TensorRT: every node runs inside
    TensorRT's engine, so they would time the same engine again under other names.
    """
    path = ctx.export_dir / Variant.FP32.file
    specs = []
    for label, options in variants.items():
        name = f"onnxruntime-{ctx.provider.value}[{label}]"
        specs.append(replace(_ort_factory(path, _tuned_config(ctx, options), name), optional=True))
    return specs


def _tuned_config(ctx: BackendContext, options: CudaOptions | TensorRTOptions) -> SessionConfig:
    tensorrt = ctx.provider is Provider.TENSORRT
    if isinstance(options, TensorRTOptions) and tensorrt:
        return replace(ctx.session_config(), tensorrt=options)
    if isinstance(options, CudaOptions) and not tensorrt:
        return ctx.session_config(options)
    raise ConfigError(
        f"{type(options).__name__} variants do not tune the {ctx.provider.value} provider: "
        "TensorRT is tuned with TensorRT's options (tensorrt_tuning_variants), CUDA with CUDA's"
    )


_NAMES = {
    BenchBackend.EAGER: "torch-eager",
    BenchBackend.EAGER_AMP: "torch-eager-amp",
    BenchBackend.TORCHSCRIPT: "torchscript",
    BenchBackend.TORCHSCRIPT_OPT: "torchscript-optimized",
    BenchBackend.COMPILE: "torch-compile",
    BenchBackend.COMPILE_AMP: "torch-compile-amp",
    BenchBackend.OPENVINO_F32: "openvino-f32",
    BenchBackend.OPENVINO_DEFAULT: "openvino-default",
}


def _ort_factory(path: Path, config: SessionConfig, name: str) -> BackendFactory:
    """An onnxruntime backend; on TensorRT, one engine per batch size (min = opt = max)."""

    def build() -> Runner:
        return _ort(path, config, name)

    if config.provider is not Provider.TENSORRT:
        return BackendFactory(name, build)

    def build_for_batch(batch_size: int) -> Runner:
        return _ort(path, replace(config, tensorrt=config.tensorrt.for_batch(batch_size)), name)

    return BackendFactory(name, build, build_for_batch)


def _ort(path: Path, config: SessionConfig, name: str) -> Runner:
    from resnext_deploy.runtime.ort import OrtRunner

    return OrtRunner(path, config, name=name)


def _torch_or_peer(kind: BenchBackend, ctx: BackendContext) -> Runner:
    from resnext_deploy.runtime.torch_runners import CompileRunner, EagerRunner, TorchScriptRunner

    if kind in (BenchBackend.COMPILE, BenchBackend.COMPILE_AMP):
        return CompileRunner(ctx.model, device=ctx.device, amp=kind is BenchBackend.COMPILE_AMP)
    if kind in (BenchBackend.EAGER, BenchBackend.EAGER_AMP):
        return EagerRunner(ctx.model, device=ctx.device, amp=kind is BenchBackend.EAGER_AMP)
    if kind in (BenchBackend.TORCHSCRIPT, BenchBackend.TORCHSCRIPT_OPT):
        return TorchScriptRunner(
            ctx.export_dir / TORCHSCRIPT_FILE,
            optimize=kind is BenchBackend.TORCHSCRIPT_OPT,
            device=ctx.device,
        )
    from resnext_deploy.runtime.peers import OpenVinoRunner

    precision = "f32" if kind is BenchBackend.OPENVINO_F32 else "default"
    return OpenVinoRunner(ctx.export_dir / Variant.FP32.file, precision, ctx.threads)


def check_installed(kinds: tuple[BenchBackend, ...]) -> None:
    """Raise :class:`ConfigError` before any work when a backend in ``kinds`` needs an optional
    package this environment lacks (OpenVINO for the ``openvino-*`` peers)."""
    import importlib.util

    wanted = [k.value for k in kinds if k in OPENVINO_BACKENDS]
    if wanted and importlib.util.find_spec("openvino") is None:
        raise ConfigError(
            f"backend {', '.join(wanted)} needs OpenVINO, which is not installed: "
            "pip install 'resnext-deploy[peers]', or leave the OpenVINO backends out"
        )


def chosen_backends(
    requested: list[BenchBackend] | tuple[BenchBackend, ...] | None, peers: bool = False
) -> tuple[BenchBackend, ...]:
    """``requested`` (default: :data:`DEFAULT_BACKENDS`), plus the peers when asked for."""
    kinds = tuple(requested or DEFAULT_BACKENDS)
    if peers:
        kinds += tuple(k for k in PEER_BACKENDS if k not in kinds)
    return kinds
