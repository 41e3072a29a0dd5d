"""``resnext-deploy bench`` as a function: resolve the model once, sweep its runners, gate the
deployable ones on accuracy (``--engines``), add context, profile, write the result files."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.artifact import Manifest, Variant
from resnext_deploy.bench.backends import (
    DEFAULT_BACKENDS,
    BackendContext,
    BackendFactory,
    BenchBackend,
    backend_factory,
    check_installed,
    tuning_factories,
    with_engines,
)
from resnext_deploy.bench.files import write_reports
from resnext_deploy.bench.gate import GateResult, fastest_passing, gate_rows
from resnext_deploy.bench.harness import (
    HarnessOverhead,
    Sweep,
    best_per_batch,
    harness_overhead,
    sweep,
    tensorrt_tuning_variants,
    tuning_variants,
)
from resnext_deploy.bench.profile import (
    ProfileConfig,
    ProfileReport,
    profile_source,
    write_profile,
)
from resnext_deploy.bench.report import BenchReport
from resnext_deploy.bench.roofline import compute_floor
from resnext_deploy.bench.source import BenchModel, bench_model
from resnext_deploy.environment import BENCH_PACKAGES, environment, package_versions
from resnext_deploy.errors import ArtifactError, BenchmarkError, ConfigError
from resnext_deploy.fileio import check_writable_dir
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
    available_cores,
    check_provider,
)
from resnext_deploy.timing import Timing
from resnext_deploy.validate import check_float, check_int, check_name

CPU_BATCH_SIZES = (1, 2, 4, 8, 16)
GPU_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Bounds of what a benchmark can finish (the CLI's options show them in --help). A batch's
# input must also fit in free memory (check_input_fits); every (backend, batch size) is timed
# for at most MAX_TIME_S seconds after at most MAX_WARMUP warm-up calls.
MAX_BATCH_SIZE = 65536
MAX_THREADS = 1024
MAX_WARMUP = 1000
MAX_ITERS = Timing().max_iters
MAX_TIME_S = 600.0
MAX_SEED = 2**32 - 1  # numpy's seeds


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What ``bench`` measures and how. ``engines``: every variant the backends run (with none:
    every variant of the export) on both engines, each deployable row gated on accuracy, and
    the fastest that passed named per batch size (:meth:`with_engines`; the CPU only)."""

    backends: tuple[BenchBackend, ...] = DEFAULT_BACKENDS
    batch_sizes: tuple[int, ...] | None = None
    provider: Provider = Provider.CPU
    threads: int | None = None
    timing: Timing = field(default_factory=Timing)
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    tune: bool = False
    measure_overhead: bool = True
    profile: bool = False  # then profile each onnxruntime variant (bench/profile.py)
    out_dir: Path | None = None  # where the result files go; None: not written
    name: str | None = None  # their stem [default: <model>-<provider>-<time>]
    seed: int = 0
    command: str = ""
    engines: bool = False

    def __post_init__(self) -> None:
        if self.tune and self.provider is Provider.CPU:
            raise ConfigError("tuning sweeps GPU provider options; it needs the cuda provider")
        if self.engines and self.provider is not Provider.CPU:
            raise ConfigError(
                "--engines (and --record) measure OpenVINO beside onnxruntime, and OpenVINO "
                f"runs on the CPU here, not on {self.provider.value}: use --provider cpu"
            )
        if self.threads is not None:
            check_int(self.threads, "threads", 1, MAX_THREADS)
        if self.batch_sizes is not None:
            if not self.batch_sizes:
                raise ConfigError(f"give at least one batch size (1..{MAX_BATCH_SIZE:,})")
            for b in self.batch_sizes:
                check_int(b, "batch size", 1, MAX_BATCH_SIZE)
        if not self.backends and not self.tune and not self.engines:
            raise ConfigError("no backend to measure")
        check_timing(self.timing)
        check_int(self.seed, "seed", 0, MAX_SEED)
        if self.name is not None:
            check_name(self.name, "report name")  # a name, never a path out of out_dir

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

    def with_engines(self, held: tuple[Variant, ...]) -> BenchConfig:
        """With ``engines``: this config with every variant its backends run (with none: every
        variant in ``held``, the export's, but the preprocessing graph) on both engines
        (:func:`~resnext_deploy.bench.backends.with_engines`); else this config. Applying it
        again changes nothing."""
        if not self.engines:
            return self
        return replace(self, backends=with_engines(self.backends, held))

    def variants(self) -> tuple[Variant, ...]:
        """The ONNX variants the engine backends run (fp32 when none does: the profile's and
        the tuning variants' graph)."""
        return tuple(dict.fromkeys(k.variant for k in self.backends if k.variant)) or (
            Variant.FP32,
        )

    def profile_config(self) -> ProfileConfig:
        """``--profile``: each variant at each batch size, on this provider and its options,
        CUDA graph left off: a graph replay is one launch, with no per-node events to profile."""
        return ProfileConfig(
            variants=self.variants(),
            batch_sizes=self.resolved_batch_sizes(),
            provider=self.provider,
            threads=self.threads,
            cuda=replace(self.cuda, enable_cuda_graph=False),
            tensorrt=self.tensorrt,
        )

    def stem(self, model: str) -> str:
        """The result files' stem: ``name``, or ``<model>-<provider>-<time>``."""
        when = f"{datetime.now():%Y%m%d-%H%M%S}"
        return self.name or f"{Path(model).name}-{self.provider.value}-{when}"

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
            "engines": self.engines,
        }


@dataclass(frozen=True)
class BenchRun:
    """What ``bench`` produced: the report, the profile when asked for, and the files written
    (none without :attr:`BenchConfig.out_dir`)."""

    report: BenchReport
    profile: ProfileReport | None = None
    files: dict[str, Path] = field(default_factory=dict)
    profile_files: dict[str, Path] = field(default_factory=dict)


def check_timing(timing: Timing) -> None:
    """Raise :class:`ConfigError` unless ``timing`` can finish: warm-up calls, iterations and
    seconds within this module's bounds, and finite."""
    check_int(timing.warmup, "warm-up calls", 0, MAX_WARMUP)
    check_int(timing.min_iters, "minimum timed calls", 1, MAX_ITERS)
    check_int(timing.max_iters, "maximum timed calls", timing.min_iters, MAX_ITERS)
    check_float(timing.min_time_s, "minimum seconds of timed calls", 0.0, MAX_TIME_S)
    check_float(timing.max_time_s, "maximum seconds per batch size", 0.0, MAX_TIME_S)


def run_benchmark(
    model: str,
    config: BenchConfig,
    checkpoint: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchRun:
    """Benchmark ``model`` (an export directory or a registered architecture name), then
    profile it with ``config.profile``, and write the result files into ``config.out_dir``.

    The model is resolved once (:func:`~resnext_deploy.bench.source.bench_model`): an
    architecture name is exported to a temporary folder and parity-checked, and every step
    times those files. Raises :class:`ProviderUnavailableError` before any work when the
    provider cannot run, and :class:`ConfigError` when ``out_dir`` is not writable.
    """
    import torch

    check_provider(config.provider, SessionConfig(cuda=config.cuda, tensorrt=config.tensorrt))
    check_installed(config.backends, engines=config.engines)
    if config.out_dir is not None:
        check_writable_dir(config.out_dir, "--out folder")  # before minutes of measuring
    torch.set_num_threads(config.resolved_threads())
    profile = None
    with bench_model(model, checkpoint, config.variants(), progress) as source:
        config = config.with_engines(source.artifact.variants)
        report = measure(source, config, progress)
        if config.profile:
            if progress:
                progress("profiling onnxruntime")
            profile = profile_source(source, config.profile_config())
    if config.out_dir is None:
        return BenchRun(report, profile)
    stem = config.stem(model)
    files = write_reports(report, config.out_dir, stem)
    profiled = write_profile(profile, config.out_dir, stem) if profile else {}
    return BenchRun(report, profile, files, profiled)


def measure(
    source: BenchModel, config: BenchConfig, progress: Callable[[str], None] | None = None
) -> BenchReport:
    """Sweep ``config``'s backends over its batch sizes on ``source`` (seeded random input),
    with the harness overhead, on the CPU the compute floor, and with ``engines`` the accuracy
    gate of each deployable row (``config`` as :meth:`BenchConfig.with_engines` resolved it)."""
    batch_sizes = config.resolved_batch_sizes()
    size = source.spec.input_size
    check_input_fits(batch_sizes, size)
    specs = backend_factories(config, backend_context(source, config))
    rng = np.random.default_rng(config.seed)

    def make_batch(b: int) -> np.ndarray:
        return rng.standard_normal((b, 3, size, size), dtype=np.float32)

    interleave = config.provider is Provider.CPU
    result = sweep(
        specs, batch_sizes, make_batch, config.timing, interleave=interleave, progress=progress
    )
    overhead = _overhead(specs, size) if config.measure_overhead else None
    gate = gate_rows(source.eager, specs, size, config.seed, progress) if config.engines else []
    return _report(source, config, result, overhead, gate)


def backend_context(source: BenchModel, config: BenchConfig) -> BackendContext:
    return BackendContext(
        model=source.eager,
        export_dir=source.export_dir,
        provider=config.provider,
        threads=config.resolved_threads(),
        cuda=config.cuda,
        # a TensorRT backend measures each batch size with an engine built for it alone
        # (backends.BackendFactory.per_batch); this range serves a runner for all of them
        tensorrt=replace(config.tensorrt, batch_sizes=config.resolved_batch_sizes()),
    )


def _report(
    source: BenchModel,
    config: BenchConfig,
    result: Sweep,
    overhead: HarnessOverhead | None,
    gate: list[GateResult],
) -> BenchReport:
    from resnext_deploy.models.resnext import count_macs

    threads = config.resolved_threads()
    gmacs = count_macs(source.eager, source.spec.input_size) / 1e9
    prefix = f"onnxruntime-{config.provider.value}"
    report = BenchReport(
        model=source.name,
        arch=source.spec.arch,
        input_size=source.spec.input_size,
        gmacs_per_image=gmacs,
        provider=config.provider.value,
        threads=threads,
        batch_sizes=list(config.resolved_batch_sizes()),
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
        tuning=best_per_batch(result.results, prefix) if config.tune else None,
        gate=gate,
        recommended=fastest_passing(result.results, gate),
    )
    if config.provider is Provider.CPU:
        report.compute_floor = compute_floor(gmacs, threads, result.results)
    return report


def held_variants(model: str) -> tuple[Variant, ...]:
    """The ONNX variants the export folder ``model``'s manifest lists, read without checking
    its files (for planning: opening the export checks them); none for an architecture name or
    a manifest that does not read."""
    if not Path(model).is_dir():
        return ()
    try:
        manifest = Manifest.read(Path(model))
    except ArtifactError:
        return ()
    return tuple(v for v in Variant if v.file in manifest.files)


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


def backend_factories(config: BenchConfig, ctx: BackendContext) -> list[BackendFactory]:
    """A factory per backend to measure, then one per tuning variant."""
    factories = [backend_factory(kind, ctx) for kind in config.backends]
    return factories + tuning_factories(ctx, config.tuning_options(ctx.tensorrt))


def _overhead(specs: list[BackendFactory], input_size: int) -> HarnessOverhead | None:
    spec = next((s for s in specs if s.name.startswith("onnxruntime")), None)
    if spec is None:
        return None
    batch = np.random.default_rng(1).standard_normal(
        (1, 3, input_size, input_size), dtype=np.float32
    )
    with spec.runner_for(1) as runner:
        bound = runner.bind(batch)
        result = harness_overhead(bound.run, runner.sync)
    return replace(result, backend=spec.name)
