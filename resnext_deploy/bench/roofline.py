"""The compute floor a CPU benchmark is read against: FLOPs per image over the machine's fp32
peak, and how close the best measured path comes to it.

The peak is the larger of the nominal one (:meth:`CpuInfo.nominal_peak_gflops`, from the flags
and clock in ``/proc/cpuinfo``) and a large MatMul measured in onnxruntime, so that the floor is
never above what was actually achieved.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from resnext_deploy.bench.harness import Measurement, json_float
from resnext_deploy.machine.cpu import cpu_info
from resnext_deploy.runtime.providers import SessionConfig, create_session


@dataclass(frozen=True, kw_only=True)
class ComputeFloor:
    """A benchmark's compute floor; an efficiency is floor / measured (1.0: at the floor)."""

    gflop_per_image: float
    peak_gflops: float
    peak_gflops_matmul: float
    peak_gflops_nominal: float
    nominal_basis: str
    floor_ms_per_image: float
    best_ms_per_image: float  # NaN: nothing was measured
    best_batch1_ms: float  # NaN: batch 1 was not measured
    efficiency_best: float
    efficiency_batch1: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ComputeFloor:
        """Read :meth:`to_dict`'s keys back, null as NaN (raises ``KeyError``/``TypeError``/
        ``ValueError`` for another shape)."""
        numbers = [f.name for f in fields(cls) if f.name != "nominal_basis"]
        return cls(
            nominal_basis=str(data["nominal_basis"]),
            **{name: json_float(data[name]) for name in numbers},
        )


def compute_floor(gmacs: float, threads: int, results: list[Measurement]) -> ComputeFloor:
    """FLOPs per image / peak FLOP/s on ``threads`` cores, and how close the best of
    ``results`` gets (runs a MatMul of a few seconds to measure the peak)."""
    measured = peak_matmul_gflops(threads)
    nominal = cpu_info().nominal_peak_gflops(threads)
    peak = max(measured, 0.0 if math.isnan(nominal.gflops) else nominal.gflops)
    floor_ms = 2 * gmacs / peak * 1e3
    best = min((m.stats.ms_per_image for m in results if m.stats), default=float("nan"))
    best_b1 = min(
        (m.stats.p50_ms for m in results if m.stats and m.batch_size == 1), default=float("nan")
    )
    return ComputeFloor(
        gflop_per_image=2 * gmacs,
        peak_gflops=peak,
        peak_gflops_matmul=measured,
        peak_gflops_nominal=nominal.gflops,
        nominal_basis=nominal.basis,
        floor_ms_per_image=floor_ms,
        best_ms_per_image=best,
        best_batch1_ms=best_b1,
        efficiency_best=floor_ms / best,
        efficiency_batch1=floor_ms / best_b1,
    )


def peak_matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    """Achieved fp32 GFLOP/s of a large square MatMul in onnxruntime (MLAS), best of
    ``repeats``: a measured lower bound on the machine's peak."""
    from onnx import TensorProto, helper

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
