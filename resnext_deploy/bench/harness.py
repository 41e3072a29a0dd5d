"""Sweep backends x batch sizes: warm up, time, check the outputs, stop cleanly at out-of-memory.

On the CPU every runner stays alive and backends are interleaved within a batch size, so that
they see the same machine state. On a GPU one runner is alive at a time (backend by backend), so
that an out-of-memory is the measured backend's own and its memory figure is its own. A
per-batch backend (TensorRT) gets a runner of its own at each batch size, and each of its rows
says which engine profile it ran (:attr:`Measurement.engine_profile`).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

import numpy as np

from resnext_deploy.bench.backends import BackendFactory
from resnext_deploy.errors import BenchmarkError, first_line
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import CudaOptions
from resnext_deploy.runtime.tensorrt import TensorRTOptions, TensorRTProfile
from resnext_deploy.timing import LatencyStats, Timing, measure
from resnext_deploy.validate import check_float, check_int

OOM_MARKERS = (
    "out of memory",
    "failed to allocate memory",
    "bfcarena",
    "cudaerrormemoryallocation",
    "cannot allocate memory",
)


class Status(StrEnum):
    OK = "ok"
    OOM = "oom"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(kw_only=True)
class Measurement:
    """One backend at one batch size. ``stats`` times the pre-bound call (device work on a
    GPU); ``end_to_end`` adds host<->device copies where there are any. ``engine_profile``: the
    optimization profile TensorRT built the measured engine for (``None`` for other runners)."""

    backend: str
    batch_size: int
    status: Status = Status.OK
    first_call_ms: float | None = None
    stats: LatencyStats | None = None
    end_to_end: LatencyStats | None = None
    output_shape: tuple[int, ...] | None = None
    rss_mb: float | None = None
    peak_rss_mb: float | None = None
    device_memory_mb: float | None = None
    # what device_memory_mb covers: allocator-peak (this backend), process, or device
    device_memory_scope: str | None = None
    speedup_vs_eager: float | None = None
    engine_profile: TensorRTProfile | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        d["output_shape"] = list(self.output_shape) if self.output_shape else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """Read :meth:`to_dict`'s keys back, every figure checked: a latency that is not a
        positive finite number would compare as no regression (raises
        :class:`BenchmarkError`, or ``KeyError``/``TypeError``/``ValueError`` for another
        shape)."""
        backend = data["backend"]
        if not isinstance(backend, str):
            raise BenchmarkError(f"a backend name must be text, got {type(backend).__name__}")
        b = check_int(data["batch_size"], f"{backend}: batch_size", 1, MAX_COUNT, BenchmarkError)
        where = f"{backend} at batch {b}"
        shape, profile = data.get("output_shape"), data.get("engine_profile")
        return cls(
            backend=backend,
            batch_size=b,
            status=Status(data.get("status", "ok")),
            first_call_ms=_figure(data.get("first_call_ms"), f"{where}: first_call_ms"),
            stats=latency_from_dict(data.get("stats"), f"{where}: stats"),
            end_to_end=latency_from_dict(data.get("end_to_end"), f"{where}: end_to_end"),
            output_shape=_shape(shape, f"{where}: output_shape") if shape else None,
            rss_mb=_figure(data.get("rss_mb"), f"{where}: rss_mb"),
            peak_rss_mb=_figure(data.get("peak_rss_mb"), f"{where}: peak_rss_mb"),
            device_memory_mb=_figure(data.get("device_memory_mb"), f"{where}: device_memory_mb"),
            device_memory_scope=_optional_text(data.get("device_memory_scope")),
            speedup_vs_eager=_figure(data.get("speedup_vs_eager"), f"{where}: speedup_vs_eager"),
            engine_profile=TensorRTProfile.from_dict(profile) if profile else None,
            error=str(data.get("error", "")),
        )


# What a report read back may hold: counts and figures beyond these are not measurements.
MAX_COUNT = 2**31 - 1
MAX_FIGURE = 1e12


def latency_from_dict(data: Any, what: str) -> LatencyStats | None:
    """A :class:`LatencyStats` block of a report (``None`` for null): every key, counts whole
    and >= 1, figures finite and >= 0, the median > 0. Raises :class:`BenchmarkError` naming
    ``what`` and the value otherwise."""
    if data is None:
        return None
    names = [f.name for f in fields(LatencyStats)]
    if not isinstance(data, dict) or sorted(data) != sorted(names):
        raise BenchmarkError(f"{what} does not hold the latency figures ({', '.join(names)})")
    values: dict[str, Any] = {}
    for name in names:
        if name in ("n", "batch_size"):
            values[name] = check_int(data[name], f"{what}.{name}", 1, MAX_COUNT, BenchmarkError)
        else:
            values[name] = check_float(
                data[name],
                f"{what}.{name}",
                0.0,
                MAX_FIGURE,
                BenchmarkError,
                low_open=name == "p50_ms",
            )
    return LatencyStats(**values)


def _figure(value: Any, what: str) -> float | None:
    """An optional figure of a report: ``None``, or a finite number >= 0."""
    if value is None:
        return None
    return check_float(value, what, 0.0, MAX_FIGURE, BenchmarkError)


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise BenchmarkError(f"{what} must be a list of dimensions")
    return tuple(check_int(d, what, 0, MAX_COUNT, BenchmarkError) for d in value)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass
class Sweep:
    results: list[Measurement]
    backends: list[dict[str, Any]] = field(default_factory=list)


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__.lower()
    return "outofmemory" in name or any(m in str(exc).lower() for m in OOM_MARKERS)


def sweep(
    backends: list[BackendFactory],
    batch_sizes: tuple[int, ...],
    make_batch: Callable[[int], np.ndarray],
    timing: Timing,
    *,
    interleave: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Sweep:
    """Measure every backend at every batch size. A backend that runs out of memory stops there
    (its larger batch sizes are recorded as skipped); other backends go on, as they do after a
    backend's error at one batch size (a per-batch backend's runner that cannot be built for
    it included). A backend that cannot start at all (its first runner cannot be built: a
    model file onnxruntime cannot load, a missing package) raises :class:`BenchmarkError`: a
    report without it would pass for a benchmark of what was asked. Only an optional backend
    (a ``--tune`` variant) or an out-of-memory is recorded instead."""
    results: dict[tuple[str, int], Measurement] = {}
    described: dict[str, dict[str, Any]] = {}
    order = (
        [(b, spec) for b in batch_sizes for spec in backends]
        if interleave
        else [(b, spec) for spec in backends for b in batch_sizes]
    )
    stopped: dict[str, str] = {}
    started: set[str] = set()
    alive = _Alive(one_at_a_time=not interleave)
    try:
        for b, spec in order:
            if progress:
                progress(f"{spec.name} batch={b}")
            m = Measurement(backend=spec.name, batch_size=b)
            results[(spec.name, b)] = m
            if spec.name in stopped:
                m.status, m.error = Status.SKIPPED, stopped[spec.name]
                continue
            try:
                runner = alive.runner(spec, b)
            except Exception as exc:  # noqa: BLE001 - recorded, the other backends go on
                _refuse_if_never_started(spec, exc, started)
                m.status = Status.OOM if is_oom(exc) else Status.ERROR
                m.error = first_line(exc)
                stopped[spec.name] = f"could not start: {m.error}"
                continue
            started.add(spec.name)
            m.engine_profile = runner.shape_profile()
            _measure_one(runner, m, make_batch, timing)
            if m.status is not Status.OK:
                reason = "out-of-memory" if m.status is Status.OOM else "an error"
                stopped[spec.name] = f"stopped after {reason} at batch {b}"
            described[spec.name] = _described(runner, spec, b, described.get(spec.name))
    finally:
        alive.close()
    ordered = [results[(spec.name, b)] for b in batch_sizes for spec in backends]
    _attach_speedups(ordered)
    return Sweep(ordered, [described[s.name] for s in backends if s.name in described])


def _refuse_if_never_started(spec: BackendFactory, exc: Exception, started: set[str]) -> None:
    """Raise :class:`BenchmarkError` for a backend the user asked for whose first runner could
    not be built (see :func:`sweep`)."""
    if spec.optional or spec.name in started or is_oom(exc):
        return
    raise BenchmarkError(f"backend {spec.name} could not start: {first_line(exc)}") from None


class _Alive:
    """The runners alive during a sweep, one per backend (a per-batch backend's: the one of the
    batch size it measures now); with ``one_at_a_time`` (a GPU) one in all."""

    def __init__(self, one_at_a_time: bool) -> None:
        self.one_at_a_time = one_at_a_time
        self._held: dict[str, tuple[int | None, Runner]] = {}

    def runner(self, spec: BackendFactory, batch_size: int) -> Runner:
        """``spec``'s runner for ``batch_size``, built when needed (raises what building does),
        after closing what must not be alive beside it."""
        key = batch_size if spec.per_batch else None
        held = self._held.get(spec.name)
        if held is not None and held[0] == key:
            return held[1]
        if self.one_at_a_time:
            self.close()
        elif held is not None:
            del self._held[spec.name]
            held[1].close()
        runner = spec.runner_for(batch_size)
        self._held[spec.name] = (key, runner)
        return runner

    def close(self) -> None:
        """Close every runner (each, even when another's close raises)."""
        with ExitStack() as stack:
            for _, runner in self._held.values():
                stack.callback(runner.close)
            self._held.clear()


def _described(
    runner: Runner, spec: BackendFactory, batch_size: int, before: dict[str, Any] | None
) -> dict[str, Any]:
    """What ``runner`` says it runs; a per-batch backend's also lists each batch size's engine
    (its profile and session build)."""
    info = runner.describe()
    if spec.per_batch:
        engines = [e for e in (before or {}).get("engines", []) if e["batch_size"] != batch_size]
        engine = {k: info[k] for k in ("tensorrt", "session_build") if k in info}
        info["engines"] = [*engines, {"batch_size": batch_size, **engine}]
    return info


def _measure_one(
    runner: Runner, m: Measurement, make_batch: Callable[[int], np.ndarray], timing: Timing
) -> None:
    b = m.batch_size
    try:
        batch = make_batch(b)  # inside the handler: a huge batch is an out-of-memory, not a crash
        runner.reset_peak_memory()
        bound = runner.bind(batch)
        m.first_call_ms, m.stats = measure(bound.run, runner.sync, timing, b)
        m.output_shape = _checked_output(bound.fetch(), b)
        e2e = runner.bind_end_to_end(batch)
        if e2e is not None:
            _, m.end_to_end = measure(e2e.run, runner.sync, timing, b)
            _checked_output(e2e.fetch(), b)
    except Exception as exc:  # noqa: BLE001 - any backend failure is recorded, not fatal
        m.status = Status.OOM if is_oom(exc) else Status.ERROR
        m.error = first_line(exc)
        m.stats = m.end_to_end = None
        return
    m.rss_mb, m.peak_rss_mb = host_memory_mb()
    memory = runner.device_memory()
    if memory is not None:
        m.device_memory_mb, m.device_memory_scope = memory.mb, memory.scope.value


class OutputCheckError(RuntimeError):
    """A backend returned something other than one finite row of logits per image."""


def _checked_output(out: np.ndarray, batch_size: int) -> tuple[int, ...]:
    out = np.asarray(out)
    if out.ndim != 2 or out.shape[0] != batch_size:
        raise OutputCheckError(
            f"returned output of shape {out.shape} for a batch of {batch_size}: the batch was "
            "not run whole"
        )
    if not np.isfinite(out).all():
        raise OutputCheckError("returned NaN or Inf")
    return tuple(int(d) for d in out.shape)


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


@dataclass(frozen=True, kw_only=True)
class HarnessOverhead:
    """What the harness adds to what it measures (:func:`harness_overhead`), and on which
    backend's call."""

    cost_us: float
    bare_ms: float
    harness_ms: float
    overhead_pct: float
    paired_pct: float
    blocks: int
    per_block: int
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HarnessOverhead:
        """Read :meth:`to_dict`'s keys back (raises ``KeyError``/``TypeError``/``ValueError``
        for another shape)."""
        times = ("cost_us", "bare_ms", "harness_ms", "overhead_pct", "paired_pct")
        return cls(
            **{k: json_float(data[k]) for k in times},
            blocks=int(data["blocks"]),
            per_block=int(data["per_block"]),
            backend=str(data.get("backend", "")),
        )


def json_float(value: Any) -> float:
    """A float read back from a report: NaN where the report holds null (it writes NaN and
    infinity so, JSON having neither)."""
    return float("nan") if value is None else float(value)


def harness_overhead(
    call: Callable[[], Any], sync: Callable[[], None], blocks: int = 20, per_block: int = 3
) -> HarnessOverhead:
    """How much the harness adds to what it measures, two ways.

    ``cost_us``: the harness loop's per-iteration cost around an empty call minus a bare loop's
    (clock reads, the sync hook, storing the sample), in microseconds. It is deterministic enough
    to quote; ``overhead_pct`` relates it to the bare latency of ``call``.
    ``paired_pct``: harness vs bare loop around the real ``call``, alternating small blocks and
    comparing medians; on a noisy machine this is dominated by noise and is only a sanity check.
    """
    cost_s = _loop_cost(sync)
    b, h = _paired_medians(call, sync, blocks, per_block)
    return HarnessOverhead(
        cost_us=cost_s * 1e6,
        bare_ms=b * 1e3,
        harness_ms=h * 1e3,
        overhead_pct=cost_s / b * 100,
        paired_pct=(h / b - 1) * 100,
        blocks=blocks,
        per_block=per_block,
    )


def _loop_cost(sync: Callable[[], None], n: int = 20000) -> float:
    """Seconds per iteration the timed loop adds to a bare loop, both around an empty call."""

    def noop() -> None:
        return None

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
    return max(harness_noop - bare_noop, 0.0)


def _paired_medians(
    call: Callable[[], Any], sync: Callable[[], None], blocks: int, per_block: int
) -> tuple[float, float]:
    """Median seconds per ``call`` in a bare loop and in the timed loop, alternating blocks."""
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
    return float(np.median(bare)), float(np.median(harness))


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


def tensorrt_tuning_variants(base: TensorRTOptions) -> dict[str, TensorRTOptions]:
    """The baseline and TensorRT's own knobs one at a time: precision, the builder's
    optimization level, its CUDA graph, auxiliary streams. (CUDA provider options do not reach
    nodes that run inside a TensorRT engine: varying them times the same engine again.)"""
    level = 5 if base.builder_optimization_level != 5 else 3
    streams = 0 if base.auxiliary_streams != 0 else -1
    return {
        "baseline": base,
        f"fp16={int(not base.fp16)}": replace(base, fp16=not base.fp16),
        f"opt_level={level}": replace(base, builder_optimization_level=level),
        f"cuda_graph={int(not base.cuda_graph)}": replace(base, cuda_graph=not base.cuda_graph),
        f"aux_streams={streams}": replace(base, auxiliary_streams=streams),
    }


def best_per_batch(results: list[Measurement], prefix: str) -> dict[int, str]:
    """For each batch size, the fastest (median) backend whose name starts with ``prefix``."""
    best: dict[int, tuple[float, str]] = {}
    for m in results:
        if m.stats is None or not m.backend.startswith(prefix):
            continue
        if m.batch_size not in best or m.stats.p50_ms < best[m.batch_size][0]:
            best[m.batch_size] = (m.stats.p50_ms, m.backend)
    return {b: name for b, (_, name) in sorted(best.items())}
