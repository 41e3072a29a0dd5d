"""Sweep backends x batch sizes; warm up, time, summarise, stop cleanly at out-of-memory."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from resnext_deploy.bench.backends import (
    Backend,
    BackendContext,
    Call,
    OrtBackend,
    build_backend,
    default_threads,
)
from resnext_deploy.bench.stats import LatencyStats, summarize
from resnext_deploy.errors import ConfigError, first_line
from resnext_deploy.runtime.providers import CudaOptions, Provider

CPU_BATCH_SIZES = (1, 2, 4, 8, 16)
GPU_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OOM_MARKERS = (
    "out of memory",
    "failed to allocate memory",
    "bfcarena",
    "cudaerrormemoryallocation",
    "cannot allocate memory",
)


@dataclass(frozen=True)
class Timing:
    """How long to measure each (backend, batch size): warm-up calls, then at least ``min_iters``
    calls and ``min_time_s`` seconds, at most ``max_iters`` calls or ``max_time_s`` seconds."""

    warmup: int = 3
    min_iters: int = 10
    min_time_s: float = 1.0
    max_iters: int = 2000
    max_time_s: float = 20.0

    def __post_init__(self) -> None:
        if self.min_iters < 1 or self.warmup < 0 or self.max_iters < self.min_iters:
            raise ConfigError("need warmup >= 0 and 1 <= min_iters <= max_iters")


@dataclass(frozen=True)
class BenchConfig:
    backends: tuple[str, ...] = ("eager", "torchscript", "torchscript-opt", "onnxruntime")
    batch_sizes: tuple[int, ...] | None = None
    provider: Provider = Provider.CPU
    threads: int | None = None
    timing: Timing = field(default_factory=Timing)
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tune: bool = False
    measure_overhead: bool = True
    seed: int = 0

    def resolved_batch_sizes(self) -> tuple[int, ...]:
        if self.batch_sizes:
            return tuple(sorted(set(self.batch_sizes)))
        return CPU_BATCH_SIZES if self.provider is Provider.CPU else GPU_BATCH_SIZES

    def __post_init__(self) -> None:
        if self.tune and self.provider is Provider.CPU:
            raise ConfigError("--tune sweeps CUDA provider options; use it with --provider cuda")


@dataclass
class Measurement:
    backend: str
    batch_size: int
    status: str = "ok"  # ok | oom | error | skipped
    first_call_ms: float | None = None
    stats: LatencyStats | None = None
    end_to_end: LatencyStats | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    device_memory_mb: float | None = None
    speedup_vs_eager: float | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stats"] = self.stats.to_dict() if self.stats else None
        d["end_to_end"] = self.end_to_end.to_dict() if self.end_to_end else None
        return d


@dataclass
class Sweep:
    results: list[Measurement]
    backends: list[dict[str, Any]]


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__.lower()
    return "outofmemory" in name or any(m in str(exc).lower() for m in OOM_MARKERS)


def measure(
    call: Call, sync: Callable[[], None], timing: Timing, batch_size: int
) -> tuple[float, LatencyStats]:
    """First-call latency (ms) and warm statistics of ``call``; the clock is read after ``sync``."""
    start = time.perf_counter()
    call()
    sync()
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(timing.warmup):
        call()
        sync()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < timing.max_iters:
        t0 = time.perf_counter()
        call()
        sync()
        t1 = time.perf_counter()
        samples.append(t1 - t0)
        elapsed = t1 - began
        if len(samples) >= timing.min_iters and elapsed >= timing.min_time_s:
            break
        if elapsed >= timing.max_time_s and len(samples) >= min(3, timing.min_iters):
            break
    return first_ms, summarize(samples, batch_size)


def sweep(
    backends: list[Backend],
    batch_sizes: tuple[int, ...],
    input_size: int,
    timing: Timing,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Sweep:
    """Measure every backend at every batch size, interleaving backends within a batch size so
    that they see the same machine state. A backend that runs out of memory stops there (its
    larger batch sizes are recorded as skipped); other backends go on."""
    rng = np.random.default_rng(seed)
    stopped: dict[str, str] = {}
    results: list[Measurement] = []
    for b in batch_sizes:
        batch = rng.standard_normal((b, 3, input_size, input_size), dtype=np.float32)
        for backend in backends:
            if progress:
                progress(f"{backend.name} batch={b}")
            m = Measurement(backend.name, b)
            results.append(m)
            if backend.name in stopped:
                m.status, m.error = "skipped", stopped[backend.name]
                continue
            try:
                m.first_call_ms, m.stats = measure(backend.bind(batch), backend.sync, timing, b)
                e2e = backend.bind_end_to_end(batch)
                if e2e is not None:
                    _, m.end_to_end = measure(e2e, backend.sync, timing, b)
            except Exception as exc:  # noqa: BLE001 - any backend failure is recorded, not fatal
                oom = is_oom(exc)
                m.status = "oom" if oom else "error"
                m.error = first_line(exc)
                stopped[backend.name] = (
                    f"stopped after out-of-memory at batch {b}"
                    if oom
                    else f"stopped after an error at batch {b}"
                )
                continue
            m.rss_mb, m.peak_rss_mb = host_memory_mb()
            m.device_memory_mb = backend.device_memory_mb()
    _attach_speedups(results)
    return Sweep(results, [be.describe() for be in backends])


def _attach_speedups(results: list[Measurement]) -> None:
    eager = {
        m.batch_size: m.stats.p50_ms
        for m in results
        if m.backend == "torch-eager" and m.stats is not None
    }
    for m in results:
        if m.stats is not None and m.batch_size in eager:
            m.speedup_vs_eager = eager[m.batch_size] / m.stats.p50_ms


def host_memory_mb() -> tuple[float, float]:
    """Current resident set size and the process's peak so far (MiB)."""
    import psutil

    rss = psutil.Process().memory_info().rss / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return rss, peak


def harness_overhead(
    call: Call, sync: Callable[[], None], blocks: int = 20, per_block: int = 3
) -> dict[str, float]:
    """How much the harness adds to what it measures, two ways.

    ``cost_us``: the harness loop's per-iteration cost around an empty call minus a bare loop's
    (clock reads, the sync hook, storing the sample), in microseconds. It is deterministic enough
    to quote; ``overhead_pct`` relates it to the bare latency of ``call``.
    ``paired_pct``: harness vs bare loop around the real ``call``, alternating small blocks and
    comparing medians; on a noisy machine this is dominated by noise and is only a sanity check.
    """

    def noop() -> None:
        return None

    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        noop()
    bare_noop = (time.perf_counter() - t0) / n
    samples: list[float] = []
    t0 = time.perf_counter()
    for _ in range(n):
        s0 = time.perf_counter()
        noop()
        sync()
        samples.append(time.perf_counter() - s0)
    harness_noop = (time.perf_counter() - t0) / n
    cost_s = max(harness_noop - bare_noop, 0.0)

    for _ in range(3):
        call()
    sync()
    bare, harness = [], []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            call()
        sync()
        bare.append((time.perf_counter() - t0) / per_block)
        block = []
        for _ in range(per_block):
            s0 = time.perf_counter()
            call()
            sync()
            block.append(time.perf_counter() - s0)
        harness.append(float(np.mean(block)))
    b, h = float(np.median(bare)), float(np.median(harness))
    return {
        "cost_us": cost_s * 1e6,
        "bare_ms": b * 1e3,
        "harness_ms": h * 1e3,
        "overhead_pct": cost_s / b * 100,
        "paired_pct": (h / b - 1) * 100,
        "blocks": blocks,
        "per_block": per_block,
    }


def theoretical_peak_gflops(cores: int) -> dict[str, float | str]:
    """Nominal fp32 peak from /proc/cpuinfo: cores x clock x FLOP per cycle, where FLOP per cycle
    assumes two FMA pipes of the widest vector unit the flags announce (AVX-512: 16 lanes, AVX2:
    8). Turbo clocks can exceed the nominal clock, so treat this as an estimate."""
    flags: set[str] = set()
    mhz = 0.0
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags") and not flags:
                    flags = set(line.split(":", 1)[1].split())
                elif line.startswith("cpu MHz") and not mhz:
                    mhz = float(line.split(":", 1)[1])
    except OSError:
        return {"gflops": float("nan"), "basis": "unknown (no /proc/cpuinfo)"}
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "fma" in flags or lanes == 16 else 1
    per_cycle = 2 * fma * lanes  # an FMA is two FLOPs
    gflops = cores * mhz / 1e3 * per_cycle
    isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
    return {
        "gflops": gflops,
        "basis": f"{cores} cores x {mhz / 1e3:.2f} GHz x {per_cycle} FLOP/cycle ({isa}, "
        f"{fma} FMA pipes)",
    }


def peak_matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Achieved fp32 GFLOP/s of a large square MatMul in onnxruntime (MLAS), best of
    ``repeats``: a measured lower bound on the machine's peak."""
    from onnx import TensorProto, helper

    from resnext_deploy.runtime.providers import SessionConfig, create_session

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "peak",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    session = create_session(model.SerializeToString(), SessionConfig(intra_op_threads=threads))
    rng = np.random.default_rng(0)
    feed = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "ab"}
    session.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(None, feed)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def tuning_variants(base: CudaOptions) -> dict[str, CudaOptions]:
    """The baseline and one change at a time: cheap enough to run, and each effect is visible."""
    return {
        "baseline": base,
        "algo=HEURISTIC": replace(base, cudnn_conv_algo_search="HEURISTIC"),
        "max_workspace=0": replace(base, cudnn_conv_use_max_workspace=False),
        "prefer_nhwc=1": replace(base, prefer_nhwc=True),
        "tf32=0": replace(base, use_tf32=False),
        "cuda_graph=1": replace(base, enable_cuda_graph=True),
    }


def build_backends(config: BenchConfig, ctx: BackendContext) -> list[Backend]:
    backends = [build_backend(kind, ctx) for kind in config.backends]
    if config.tune:
        backends += [
            OrtBackend(ctx, cuda=opts, name=f"onnxruntime-cuda[{label}]")
            for label, opts in tuning_variants(config.cuda).items()
            if label != "baseline"
        ]
    return backends


def best_per_batch(results: list[Measurement], prefix: str) -> dict[int, str]:
    """For each batch size, the fastest (median) backend whose name starts with ``prefix``."""
    best: dict[int, tuple[float, str]] = {}
    for m in results:
        if m.stats is None or not m.backend.startswith(prefix):
            continue
        if m.batch_size not in best or m.stats.p50_ms < best[m.batch_size][0]:
            best[m.batch_size] = (m.stats.p50_ms, m.backend)
    return {b: name for b, (_, name) in sorted(best.items())}


def context_threads(config: BenchConfig) -> int:
    return config.threads or default_threads()
