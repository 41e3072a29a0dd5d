"""Timing primitives shared by every layer that measures speed (benchmarks, int8 layer choice):
how long to measure, the measuring loop, and the statistics of its samples (numpy only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from resnext_deploy.errors import ConfigError

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one call in milliseconds over ``n`` timed iterations at ``batch_size``.

    ``images_per_s`` is ``batch_size / median``: the throughput a steady stream of such calls
    sustains. ``cv`` (std / mean) and ``iqr_ms`` say how stable the measurement was.
    """

    n: int
    batch_size: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    iqr_ms: float
    cv: float
    images_per_s: float
    ms_per_image: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples_s: list[float] | np.ndarray, batch_size: int) -> LatencyStats:
    """Statistics of ``samples_s`` (seconds). Percentiles use linear interpolation."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples")
    p50, p90, p95, p99 = (float(np.percentile(ms, q)) for q in PERCENTILES)
    q1, q3 = np.percentile(ms, [25, 75])
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return LatencyStats(
        n=int(ms.size),
        batch_size=batch_size,
        mean_ms=mean,
        std_ms=std,
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        p50_ms=p50,
        p90_ms=p90,
        p95_ms=p95,
        p99_ms=p99,
        iqr_ms=float(q3 - q1),
        cv=std / mean if mean else 0.0,
        images_per_s=batch_size / (p50 / 1e3) if p50 else float("inf"),
        ms_per_image=p50 / batch_size,
    )


@dataclass(frozen=True, kw_only=True)
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


def measure(
    call: Callable[[], Any], sync: Callable[[], None], timing: Timing, batch_size: int
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
