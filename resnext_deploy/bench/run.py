"""``resnext-deploy bench`` as a function: resolve the model, sweep its runners, add context."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.artifact import Precision, Variant
from resnext_deploy.bench.backends import (
    DEFAULT_BACKENDS,
    BackendContext,
    BackendSpec,
    BenchBackend,
    backend_spec,
    tuning_specs,
)
from resnext_deploy.bench.harness import (
    Measurement,
    best_per_batch,
    harness_overhead,
    peak_matmul_gflops,
    sweep,
    tensorrt_tuning_variants,
    theoretical_peak_gflops,
    tuning_variants,
)
from resnext_deploy.bench.report import BenchReport
from resnext_deploy.environment import BENCH_PACKAGES, environment, package_versions
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
    available_cores,
    check_provider,
)
from resnext_deploy.timing import Timing

CPU_BATCH_SIZES = (1, 2, 4, 8, 16)
GPU_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
MAX_BATCH_SIZE = 65536


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    backends: tuple[BenchBackend, ...] = DEFAULT_BACKENDS
    batch_sizes: tuple[int, ...] | None = None
    provider: Provider = Provider.CPU
    threads: int | None = None
    timing: Timing = field(default_factory=Timing)
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    tune: bool = False
    measure_overhead: bool = True
    seed: int = 0
    command: str = ""

    def __post_init__(self) -> None:
        if self.tune and self.provider is Provider.CPU:
            raise ConfigError("tuning sweeps GPU provider options; it needs the cuda provider")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, not {self.threads}")
        if self.batch_sizes is not None and (
            not self.batch_sizes or any(not 1 <= b <= MAX_BATCH_SIZE for b in self.batch_sizes)
        ):
            raise ConfigError(f"batch sizes must lie in 1..{MAX_BATCH_SIZE}")
        if not self.backends and not self.tune:
            raise ConfigError("no backend to measure")

    def resolved_batch_sizes(self) -> tuple[int, ...]:
        if self.batch_sizes:
            return tuple(sorted(set(self.batch_sizes)))
        return CPU_BATCH_SIZES if self.provider is Provider.CPU else GPU_BATCH_SIZES

    def resolved_threads(self) -> int:
        return self.threads or available_cores()

    def tuning_options(
        self, tensorrt: TensorRTOptions | None = None
    ) -> dict[str, CudaOptions] | dict[str, TensorRTOptions]:
        """The variants ``tune`` adds, baseline left out: TensorRT's own knobs on TensorRT
        (CUDA's options do not reach its engine), CUDA's options elsewhere. ``tensorrt``: the
        base TensorRT options (default this config's)."""
        if not self.tune:
            return {}
        variants: dict[str, CudaOptions] | dict[str, TensorRTOptions]
        if self.provider is Provider.TENSORRT:
            variants = tensorrt_tuning_variants(tensorrt or self.tensorrt)
        else:
            variants = tuning_variants(self.cuda)
        variants.pop("baseline")
        return variants

    def planned_measurements(self) -> int:
        """Backend x batch-size measurements the sweep will make (tuning variants included)."""
        tuned = len(self.tuning_options())
        return len(self.resolved_batch_sizes()) * (len(self.backends) + tuned)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backends": [b.value for b in self.backends],
            "batch_sizes": list(self.resolved_batch_sizes()),
            "provider": self.provider.value,
            "threads": self.resolved_threads(),
            "timing": self.timing.__dict__,
            "cuda": self.cuda.to_ort(),
            **({"tensorrt": self.tensorrt.to_dict()} if self.provider is Provider.TENSORRT else {}),
            "tune": self.tune,
            "measure_overhead": self.measure_overhead,
            "seed": self.seed,
        }


def run_benchmark(
    model: str,
    config: BenchConfig,
    checkpoint: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Benchmark ``model`` (an export directory or a registered architecture name).

    An architecture name is built with random weights (speed does not depend on them) or loaded
    from ``checkpoint``, exported to a temporary directory and parity-checked first.
    Raises :class:`ProviderUnavailableError` before any work when the provider cannot run.
    """
    import torch

    check_provider(config.provider, SessionConfig(cuda=config.cuda, tensorrt=config.tensorrt))
    threads = config.resolved_threads()
    torch.set_num_threads(threads)
    batch_sizes = config.resolved_batch_sizes()
    with tempfile.TemporaryDirectory(prefix="resnext-bench-") as tmp:
        eager, spec, folder = _resolve(model, checkpoint, Path(tmp), progress, config.backends)
        from resnext_deploy.models.resnext import count_macs

        ctx = BackendContext(
            model=eager,
            export_dir=folder,
            provider=config.provider,
            threads=threads,
            cuda=config.cuda,
            # a TensorRT backend measures each batch size with an engine built for it alone
            # (backends.BackendSpec.per_batch); this range serves a runner for all of them
            tensorrt=replace(config.tensorrt, batch_sizes=batch_sizes),
        )
        check_input_fits(batch_sizes, spec.input_size)
        specs = backend_specs(config, ctx)
        rng = np.random.default_rng(config.seed)
        size = spec.input_size

        def make_batch(b: int) -> np.ndarray:
            return rng.standard_normal((b, 3, size, size), dtype=np.float32)

        result = sweep(
            specs,
            batch_sizes,
            make_batch,
            config.timing,
            interleave=config.provider is Provider.CPU,
            progress=progress,
        )
        overhead = _overhead(specs, size) if config.measure_overhead else None
        gmacs = count_macs(eager, size) / 1e9
    report = BenchReport(
        model=model,
        arch=spec.arch,
        input_size=spec.input_size,
        gmacs_per_image=gmacs,
        provider=config.provider.value,
        threads=threads,
        batch_sizes=list(batch_sizes),
        results=result.results,
        backends=result.backends,
        config=config.to_dict(),
        command=config.command,
        environment=environment(
            {
                "threads": threads,
                "provider": config.provider.value,
                "versions": package_versions(BENCH_PACKAGES),
            }
        ),
        overhead=overhead,
        best=best_per_batch(result.results, ""),
        tuning=(
            best_per_batch(result.results, f"onnxruntime-{config.provider.value}")
            if config.tune
            else None
        ),
    )
    if config.provider is Provider.CPU:
        report.compute_floor = compute_floor(gmacs, threads, result.results)
    return report


def check_input_fits(batch_sizes: tuple[int, ...], input_size: int) -> None:
    """Refuse, before any work, a batch whose float32 input alone exceeds the memory this
    machine has free (the activations need several times more): the kernel's OOM killer would
    end the run without a word instead of a ``MemoryError`` the sweep could record."""
    import psutil

    largest = max(batch_sizes)
    need = largest * 3 * input_size * input_size * 4
    free = psutil.virtual_memory().available
    if need > free:
        raise BenchmarkError(
            f"batch size {largest} needs {need / 2**30:.1f} GiB for its input alone and this "
            f"machine has {free / 2**30:.1f} GiB free; use smaller batch sizes"
        )


def backend_specs(config: BenchConfig, ctx: BackendContext) -> list[BackendSpec]:
    specs = [backend_spec(kind, ctx) for kind in config.backends]
    return specs + tuning_specs(ctx, config.tuning_options(ctx.tensorrt))


def compute_floor(gmacs: float, threads: int, results: list[Measurement]) -> dict[str, Any]:
    """FLOPs per image / peak FLOP/s, and how close the best measured path gets.

    The peak is the larger of the nominal peak from /proc/cpuinfo and a measured large MatMul,
    so that the floor is never above what was actually achieved.
    """
    measured = peak_matmul_gflops(threads)
    nominal = theoretical_peak_gflops(threads)
    nominal_gflops = float(nominal["gflops"])
    peak = max(measured, nominal_gflops if nominal_gflops == nominal_gflops else 0.0)
    floor_ms = 2 * gmacs / peak * 1e3
    best = min((m.stats.ms_per_image for m in results if m.stats), default=float("nan"))
    best_b1 = min(
        (m.stats.p50_ms for m in results if m.stats and m.batch_size == 1), default=float("nan")
    )
    return {
        "gflop_per_image": 2 * gmacs,
        "peak_gflops": peak,
        "peak_gflops_matmul": measured,
        "peak_gflops_nominal": nominal_gflops,
        "nominal_basis": nominal["basis"],
        "floor_ms_per_image": floor_ms,
        "best_ms_per_image": best,
        "best_batch1_ms": best_b1,
        "efficiency_best": floor_ms / best,
        "efficiency_batch1": floor_ms / best_b1,
    }


def _overhead(specs: list[BackendSpec], input_size: int) -> dict[str, Any] | None:
    spec = next((s for s in specs if s.name.startswith("onnxruntime")), None)
    if spec is None:
        return None
    batch = np.random.default_rng(1).standard_normal(
        (1, 3, input_size, input_size), dtype=np.float32
    )
    with spec.runner_for(1) as runner:
        bound = runner.bind(batch)
        result: dict[str, Any] = harness_overhead(bound.run, runner.sync)
    result["backend"] = spec.name
    return result


def _precisions(backends: tuple[BenchBackend, ...]) -> tuple[Precision, ...]:
    """The ONNX variants an architecture name must be exported with for ``backends``. int8 needs
    calibration images, which a bare architecture name has not: refused with what to do."""
    variants = {k.variant for k in backends if k.variant is not None}
    if Variant.INT8 in variants:
        raise ConfigError(
            "backend onnxruntime-int8 needs an int8 variant calibrated on images, which an "
            "architecture name has not: export the model with precision int8 and calibration "
            "images, then benchmark that export folder"
        )
    return (Precision.FP32, *((Precision.FP16,) if Variant.FP16 in variants else ()))


def _resolve(
    model: str,
    checkpoint: Path | None,
    tmp: Path,
    progress: Callable[[str], None] | None,
    backends: tuple[BenchBackend, ...] = (),
) -> tuple[Any, Any, Path]:
    from resnext_deploy.artifact import WEIGHTS_FILE, open_artifact
    from resnext_deploy.models.checkpoint import LoadOptions, load_model, read_checkpoint
    from resnext_deploy.models.registry import ARCHS, build_model

    if Path(model).is_dir():
        artifact = open_artifact(model)
        spec = artifact.spec
        eager = build_model(spec.architecture(), spec.num_classes)
        eager.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict)
        return eager.eval(), spec, artifact.path
    precisions = _precisions(backends)  # before minutes of loading and exporting
    from resnext_deploy.export.pipeline import ExportConfig, export_model
    from resnext_deploy.spec import ModelSpec
    from resnext_deploy.verify import VerifyConfig

    if checkpoint is not None:
        eager, spec = load_model(checkpoint, LoadOptions(arch=model))
    else:
        import torch

        cfg = ARCHS.get(model)
        torch.manual_seed(0)
        eager = build_model(cfg, 1000)
        spec = ModelSpec(model, 1000, cfg.input_size, cfg.input_size, arch_config=cfg.to_dict())
    if progress:
        progress(f"exporting {model} (random weights)" if checkpoint is None else "exporting")
    export_model(
        eager,
        spec,
        ExportConfig(
            out_dir=tmp / "model",
            verify=VerifyConfig(batch_sizes=(1, 2), auto_cuda=False),
            precisions=precisions,
        ),
    )
    return eager, spec, tmp / "model"
