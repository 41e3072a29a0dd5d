"""Triton's statistics extension (``GET /v2/models/<name>/stats``): what one replica counted,
and the sum over replicas. Ray-free: the replica records, this module counts and sums.

The fields mean what they mean in Triton, so ``perf_analyzer`` and Triton dashboards read them
as they would Triton's: per inference *request*, ``success``/``fail`` (the request's whole time
in the replica, from its arrival with a complete body to its answer), ``queue`` (waiting for its
batch to run), ``compute_input`` (parsing and validating it), ``compute_infer`` (the model run
its batch was part of) and ``compute_output`` (encoding the answer); per model *execution*,
``batch_stats`` by batch size. ``inference_count`` counts images, ``execution_count`` model runs.
Durations are nanoseconds, ``last_inference`` milliseconds since the epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

STAGES = ("queue", "compute_input", "compute_infer", "compute_output")
BATCH_STAGES = ("compute_input", "compute_infer", "compute_output")
UNUSED = ("cache_hit", "cache_miss")  # Triton's response cache: not offered here


@dataclass
class Duration:
    """How many, and how long in all (ns)."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, ns)

    def to_dict(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class RequestTiming:
    """One inference request's clock readings in a replica (``time.monotonic_ns``)."""

    arrived: int = field(default_factory=time.monotonic_ns)
    # when the model was asked, its batch started and ended, and the answer came back
    stages: tuple[int, int, int, int] | None = None
    images: int = 0

    def ran(self, called: int, started: int, ended: int, images: int) -> None:
        self.stages = (called, started, ended, time.monotonic_ns())
        self.images = images


@dataclass
class ModelStatistics:
    """The counters of one model in one replica, or their sum over replicas."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    batches: dict[int, dict[str, Duration]] = field(default_factory=dict)

    def request_done(self, timing: RequestTiming, ok: bool) -> None:
        """Count a finished inference request: its stages when it ran and succeeded."""
        now = time.monotonic_ns()
        if not ok or timing.stages is None:
            self.fail.add(now - timing.arrived)
            return
        called, started, ended, returned = timing.stages
        self.success.add(now - timing.arrived)
        self.compute_input.add(called - timing.arrived)
        self.queue.add(started - called)
        self.compute_infer.add(ended - started)
        self.compute_output.add(now - returned)
        self.inference_count += timing.images
        self.last_inference = time.time_ns() // 1_000_000

    def batch_ran(self, images: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """Count one model execution of ``images`` images."""
        self.execution_count += 1
        stages = self.batches.setdefault(images, {s: Duration() for s in BATCH_STAGES})
        for stage, ns in zip(BATCH_STAGES, (input_ns, infer_ns, output_ns), strict=True):
            stages[stage].add(ns)

    def to_dict(self, name: str, version: str = "1") -> dict[str, Any]:
        """One entry of Triton's ``model_stats`` list."""
        inference = {s: getattr(self, s).to_dict() for s in ("success", "fail", *STAGES)}
        inference |= {s: Duration().to_dict() for s in UNUSED}
        batches = [
            {"batch_size": size} | {s: d.to_dict() for s, d in stages.items()}
            for size, stages in sorted(self.batches.items())
        ]
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": inference,
            "batch_stats": batches,
            "memory_usage": [],
        }

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> ModelStatistics:
        """Read :meth:`to_dict`'s form back (as another replica sent it)."""
        inference = entry["inference_stats"]
        stats = cls(
            inference_count=int(entry["inference_count"]),
            execution_count=int(entry["execution_count"]),
            last_inference=int(entry["last_inference"]),
        )
        for stage in ("success", "fail", *STAGES):
            setattr(stats, stage, Duration(**inference[stage]))
        for batch in entry["batch_stats"]:
            stats.batches[int(batch["batch_size"])] = {
                s: Duration(**batch[s]) for s in BATCH_STAGES
            }
        return stats

    def __add__(self, other: ModelStatistics) -> ModelStatistics:
        total = ModelStatistics(
            inference_count=self.inference_count + other.inference_count,
            execution_count=self.execution_count + other.execution_count,
            last_inference=max(self.last_inference, other.last_inference),
        )
        for name in ("success", "fail", *STAGES):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(total, name, Duration(mine.count + theirs.count, mine.ns + theirs.ns))
        for source in (self, other):
            for size, stages in source.batches.items():
                into = total.batches.setdefault(size, {s: Duration() for s in BATCH_STAGES})
                for stage, d in stages.items():
                    into[stage].add(d.ns, d.count)
        return total
