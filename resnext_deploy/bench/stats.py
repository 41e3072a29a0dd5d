"""Summary statistics of latency samples (numpy only)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

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
