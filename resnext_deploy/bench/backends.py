"""The backends ``bench`` can time, as names, and the factory that builds their runners.

Every backend is a runner of the one runtime family (:mod:`resnext_deploy.runtime`); the
benchmark only chooses which runners to build, with what options, on which files of an export.
A *deployable* backend is an engine (onnxruntime or OpenVINO) running one variant of the export
as ``predict``/``serve`` would run it; only those can be recommended (:mod:`.gate`). TensorRT
tunes its kernels for the profile's opt shape, so an onnxruntime backend on TensorRT is built
once per batch size, with an engine for that size alone (:attr:`BackendFactory.per_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import TORCHSCRIPT_FILE, Variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.recommendation import Engine
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
    OPENVINO = "openvino"
    OPENVINO_FP16 = "openvino-fp16"
    OPENVINO_INT8 = "openvino-int8"
    OPENVINO_DEFAULT = "openvino-default"

    @property
    def engine(self) -> Engine | None:
        """The engine that runs the export's ONNX file; ``None`` for the torch backends."""
        if self.value.startswith("onnxruntime"):
            return Engine.ONNXRUNTIME
        return Engine.OPENVINO if self.value.startswith("openvino") else None

    @property
    def variant(self) -> Variant | None:
        """The export variant a deployable backend runs; ``None`` for the torch backends and
        the ``openvino-default`` peer (OpenVINO's own precision choice is not what ``--engine
        openvino`` deploys)."""
        return next((v for (_, v), k in ENGINE_BACKENDS.items() if k is self), None)


# (engine, variant) -> the backend that runs that variant on that engine, as deployed
ENGINE_BACKENDS = {
    (Engine.ONNXRUNTIME, Variant.FP32): BenchBackend.ONNXRUNTIME,
    (Engine.ONNXRUNTIME, Variant.FP16): BenchBackend.ONNXRUNTIME_FP16,
    (Engine.ONNXRUNTIME, Variant.INT8): BenchBackend.ONNXRUNTIME_INT8,
    (Engine.OPENVINO, Variant.FP32): BenchBackend.OPENVINO,
    (Engine.OPENVINO, Variant.FP16): BenchBackend.OPENVINO_FP16,
    (Engine.OPENVINO, Variant.INT8): BenchBackend.OPENVINO_INT8,
}
DEFAULT_BACKENDS = (
    BenchBackend.EAGER,
    BenchBackend.TORCHSCRIPT,
    BenchBackend.TORCHSCRIPT_OPT,
    BenchBackend.ONNXRUNTIME,
)
PEER_BACKENDS = (BenchBackend.COMPILE, BenchBackend.OPENVINO, BenchBackend.OPENVINO_DEFAULT)
OPENVINO_BACKENDS = tuple(k for k in BenchBackend if k.engine is Engine.OPENVINO)
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
    ends the benchmark (:func:`~resnext_deploy.bench.harness.sweep`). ``engine`` and
    ``variant``: what a deployable backend deploys (``None`` for the others)."""

    name: str
    build: Callable[[], Runner]
    build_for_batch: Callable[[int], Runner] | None = None
    optional: bool = False
    engine: Engine | None = None
    variant: Variant | None = None

    @property
    def per_batch(self) -> bool:
        return self.build_for_batch is not None

    @property
    def deployable(self) -> bool:
        """An engine running one variant of the export as ``--engine`` deploys it."""
        return self.engine is not None and self.variant is not None

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
    if variant is None:
        return BackendFactory(_NAMES[kind], lambda: _torch_or_peer(kind, ctx))
    path = ctx.export_dir / variant.file
    if not path.is_file():
        raise ConfigError(
            f"backend {kind.value} needs an export with the {variant.value} variant; "
            f"{path} is missing"
        )
    if kind.engine is Engine.OPENVINO:
        return _openvino_factory(path, ctx, variant)
    name = f"onnxruntime-{ctx.provider.value}{variant.suffix}"
    return _ort_factory(path, ctx.session_config(), name, variant)


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
        # a tuned configuration is not what --engine deploys: never recommended
        factory = _ort_factory(path, _tuned_config(ctx, options), name, None)
        specs.append(replace(factory, optional=True))
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
    BenchBackend.OPENVINO_DEFAULT: "openvino-default",
}


def _ort_factory(
    path: Path, config: SessionConfig, name: str, variant: Variant | None
) -> BackendFactory:
    """An onnxruntime backend (deployable when it runs ``variant``); on TensorRT, one engine
    per batch size (min = opt = max)."""

    def build() -> Runner:
        return _ort(path, config, name)

    engine = Engine.ONNXRUNTIME if variant is not None else None
    if config.provider is not Provider.TENSORRT:
        return BackendFactory(name, build, engine=engine, variant=variant)

    def build_for_batch(batch_size: int) -> Runner:
        return _ort(path, replace(config, tensorrt=config.tensorrt.for_batch(batch_size)), name)

    return BackendFactory(name, build, build_for_batch, engine=engine, variant=variant)


def _openvino_factory(path: Path, ctx: BackendContext, variant: Variant) -> BackendFactory:
    """``variant`` on OpenVINO's CPU plugin, built as ``--engine openvino`` builds it (f32 hint,
    the benchmark's threads)."""
    name = f"openvino-cpu{variant.suffix}"

    def build() -> Runner:
        from resnext_deploy.runtime.engines import open_runner

        return open_runner(path, Engine.OPENVINO, ctx.session_config(), name=name)

    return BackendFactory(name, build, engine=Engine.OPENVINO, variant=variant)


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
    from resnext_deploy.runtime.openvino import (
        OpenVinoConfig,
        OpenVinoPrecision,
        OpenVinoRunner,
    )

    config = OpenVinoConfig(precision=OpenVinoPrecision.DEFAULT, threads=ctx.threads)
    return OpenVinoRunner(ctx.export_dir / Variant.FP32.file, config, name=_NAMES[kind])


def check_installed(kinds: tuple[BenchBackend, ...], engines: bool = False) -> None:
    """Raise :class:`ConfigError` before any work when a backend in ``kinds`` (or ``engines``:
    ``--engines``, which measures OpenVINO) needs OpenVINO and this environment lacks it."""
    from resnext_deploy.runtime.openvino import INSTALL_HINT, openvino_installed

    wanted = [k.value for k in kinds if k in OPENVINO_BACKENDS]
    if not (wanted or engines) or openvino_installed():
        return
    what = "--engines" if engines else f"backend {', '.join(wanted)}"
    raise ConfigError(
        f"{what} needs OpenVINO, which is not installed: {INSTALL_HINT}, or leave "
        f"{'--engines' if engines else 'the OpenVINO backends'} out"
    )


def chosen_backends(
    requested: list[BenchBackend] | tuple[BenchBackend, ...] | None,
    peers: bool = False,
    engines: bool = False,
) -> tuple[BenchBackend, ...]:
    """``requested`` (default: :data:`DEFAULT_BACKENDS`), plus the peers when asked for. With
    ``engines`` and nothing requested, no default or peer runs a variant, so that
    :func:`with_engines` covers every variant of the export."""
    kinds = tuple(requested or DEFAULT_BACKENDS)
    if engines and not requested:
        kinds = tuple(k for k in kinds if k.variant is None)
    if peers:
        kinds += tuple(k for k in PEER_BACKENDS if k not in kinds and not (engines and k.variant))
    return kinds


def with_engines(
    kinds: tuple[BenchBackend, ...], held: tuple[Variant, ...]
) -> tuple[BenchBackend, ...]:
    """``kinds`` with every variant they run on both engines, side by side (onnxruntime, then
    OpenVINO, per variant, after the other backends). When none of ``kinds`` runs a variant:
    every variant in ``held`` (the export's) but the preprocessing graph, else fp32."""
    variants = tuple(dict.fromkeys(k.variant for k in kinds if k.variant)) or tuple(
        v for v in held if v is not Variant.PREPROCESS
    )
    others = tuple(k for k in kinds if k.variant is None)
    pairs = tuple(ENGINE_BACKENDS[(e, v)] for v in variants or (Variant.FP32,) for e in Engine)
    return others + pairs
