"""The compute floor: FLOPs per image over the larger of the nominal and the measured peak, and
how close the best measured rows come."""

from __future__ import annotations

import math

import pytest

from resnext_deploy.bench import roofline
from resnext_deploy.bench.harness import Measurement
from resnext_deploy.machine.cpu import CpuInfo
from resnext_deploy.timing import summarize


def row(backend: str, batch_size: int, p50_ms: float) -> Measurement:
    stats = summarize([p50_ms / 1e3] * 5, batch_size)
    return Measurement(backend=backend, batch_size=batch_size, stats=stats)


@pytest.fixture
def avx2_at_2ghz(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 GHz AVX2+FMA CPU (32 FLOP/cycle: 64 GFLOP/s a core) and a MatMul reaching 100."""
    cpu = CpuInfo(model="test", flags=frozenset({"avx2", "fma"}), clock_mhz=2000.0)
    monkeypatch.setattr(roofline, "cpu_info", lambda: cpu)
    monkeypatch.setattr(roofline, "peak_matmul_gflops", lambda threads: 100.0)


def test_the_floor_uses_the_nominal_peak_when_it_is_higher(avx2_at_2ghz: None) -> None:
    rows = [row("a", 1, 80.0), row("a", 4, 200.0), row("b", 1, 60.0)]
    floor = roofline.compute_floor(4.0, 2, rows)  # 4 GMACs = 8 GFLOP; 2 cores: 128 GFLOP/s
    assert (floor.peak_gflops, floor.peak_gflops_matmul, floor.peak_gflops_nominal) == (
        128.0,
        100.0,
        128.0,
    )
    assert floor.floor_ms_per_image == pytest.approx(8 / 128 * 1e3)
    assert floor.best_batch1_ms == pytest.approx(60.0)
    assert floor.best_ms_per_image == pytest.approx(50.0)  # batch 4: 200 ms / 4 images
    assert floor.efficiency_batch1 == pytest.approx(62.5 / 60.0)
    assert floor.nominal_basis == "2 cores x 2.00 GHz x 32 FLOP/cycle (AVX2, 2 FMA pipes)"


def test_the_measured_peak_counts_when_the_nominal_is_unknown(
    monkeypatch: pytest.MonkeyPatch, avx2_at_2ghz: None
) -> None:
    monkeypatch.setattr(roofline, "cpu_info", lambda: CpuInfo(model="?", clock_mhz=None))
    floor = roofline.compute_floor(4.0, 2, [row("a", 2, 100.0)])
    assert floor.peak_gflops == 100.0 and math.isnan(floor.peak_gflops_nominal)
    assert math.isnan(floor.best_batch1_ms) and math.isnan(floor.efficiency_batch1)


def test_the_floor_writes_the_keys_reports_hold(avx2_at_2ghz: None) -> None:
    floor = roofline.compute_floor(4.0, 2, [row("a", 1, 80.0)])
    assert list(floor.to_dict()) == [
        "gflop_per_image",
        "peak_gflops",
        "peak_gflops_matmul",
        "peak_gflops_nominal",
        "nominal_basis",
        "floor_ms_per_image",
        "best_ms_per_image",
        "best_batch1_ms",
        "efficiency_best",
        "efficiency_batch1",
    ]
    assert roofline.ComputeFloor.from_dict(floor.to_dict()) == floor
