"""``resnext-deploy bench`` as a function: resolve the model, sweep, add context, report."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from resnext_deploy.bench.backends import BackendContext, OrtBackend
from resnext_deploy.bench.harness import (
    BenchConfig,
    Measurement,
    best_per_batch,
    build_backends,
    context_threads,
    harness_overhead,
    peak_matmul_gflops,
    sweep,
    theoretical_peak_gflops,
)
from resnext_deploy.environment import BENCH_PACKAGES, environment, package_versions
from resnext_deploy.runtime.providers import Provider, check_provider

REPORT_FORMAT = 1


@dataclass
class BenchReport:
    model: str
    arch: str
    input_size: int
    gmacs_per_image: float
    provider: str
    threads: int
    batch_sizes: list[int]
    results: list[Measurement]
    backends: list[dict[str, Any]]
    config: dict[str, Any]
    environment: dict[str, Any]
    overhead: dict[str, float] | None = None
    compute_floor: dict[str, float] | None = None
    best: dict[int, str] = field(default_factory=dict)
    tuning: dict[int, str] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "results"}
        d["format"] = REPORT_FORMAT
        d["results"] = [m.to_dict() for m in self.results]
        return d


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

    check_provider(config.provider)
    threads = context_threads(config)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="resnext-bench-") as tmp:
        eager, spec, folder = _resolve(model, checkpoint, Path(tmp), progress)
        from resnext_deploy.export.manifest import ONNX_FILE, TORCHSCRIPT_FILE
        from resnext_deploy.models.resnext import count_macs

        ctx = BackendContext(
            eager,
            folder / ONNX_FILE,
            folder / TORCHSCRIPT_FILE,
            config.provider,
            threads,
            config.cuda,
        )
        backends = build_backends(config, ctx)
        try:
            result = sweep(
                backends,
                config.resolved_batch_sizes(),
                spec.input_size,
                config.timing,
                config.seed,
                progress,
            )
            overhead = _overhead(backends, spec.input_size) if config.measure_overhead else None
        finally:
            for backend in backends:
                backend.close()
        gmacs = count_macs(eager, spec.input_size) / 1e9
    report = BenchReport(
        model=model,
        arch=spec.arch,
        input_size=spec.input_size,
        gmacs_per_image=gmacs,
        provider=config.provider.value,
        threads=threads,
        batch_sizes=list(config.resolved_batch_sizes()),
        results=result.results,
        backends=result.backends,
        config=_config_dict(config),
        environment=environment(
            {
                "threads": threads,
                "provider": config.provider.value,
                "versions": package_versions(BENCH_PACKAGES),
            }
        ),
        overhead=overhead,
        best=best_per_batch(result.results, ""),
        tuning=best_per_batch(result.results, "onnxruntime-cuda") if config.tune else None,
    )
    if config.provider is Provider.CPU:
        report.compute_floor = compute_floor(gmacs, threads, result.results)
    return report


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


def _overhead(backends: list[Any], input_size: int) -> dict[str, float] | None:
    import numpy as np

    ort = next((b for b in backends if isinstance(b, OrtBackend)), None)
    if ort is None:
        return None
    batch = np.random.default_rng(1).standard_normal(
        (1, 3, input_size, input_size), dtype=np.float32
    )
    result = harness_overhead(ort.bind(batch), ort.sync)
    result["backend"] = ort.name  # type: ignore[assignment]
    return result


def _resolve(
    model: str, checkpoint: Path | None, tmp: Path, progress: Callable[[str], None] | None
) -> tuple[Any, Any, Path]:
    from resnext_deploy.export.manifest import WEIGHTS_FILE, open_artifact
    from resnext_deploy.models.checkpoint import LoadOptions, load_model, read_checkpoint
    from resnext_deploy.models.registry import ARCHS, build_model

    if Path(model).is_dir():
        artifact = open_artifact(model)
        spec = artifact.spec
        eager = build_model(spec.architecture(), spec.num_classes)
        eager.load_state_dict(read_checkpoint(artifact.file(WEIGHTS_FILE)).state_dict)
        return eager.eval(), spec, artifact.path
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
        ExportConfig(tmp / "model", verify=VerifyConfig(batch_sizes=(1, 2), auto_cuda=False)),
    )
    return eager, spec, tmp / "model"


def _config_dict(config: BenchConfig) -> dict[str, Any]:
    d = asdict(config)
    d["provider"] = config.provider.value
    d["batch_sizes"] = list(config.resolved_batch_sizes())
    return d
