"""Every benchmark report committed under benchmarks/results loads into the typed BenchReport
and writes back the keys it was read from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from resnext_deploy.bench.harness import HarnessOverhead
from resnext_deploy.bench.report import BenchReport, load_report
from resnext_deploy.bench.roofline import ComputeFloor
from resnext_deploy.errors import BenchmarkError

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
COMMITTED = sorted(
    p for p in RESULTS.glob("*.json") if "results" in json.loads(p.read_text(encoding="utf-8"))
)


def test_there_are_committed_reports_with_every_block() -> None:
    reports = [load_report(p) for p in COMMITTED]
    assert len(reports) >= 6
    assert any(r.overhead for r in reports) and any(r.compute_floor for r in reports)
    assert any(r.overhead is None for r in reports)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.name)
def test_a_committed_report_loads_and_writes_its_context_back_unchanged(path: Path) -> None:
    written = json.loads(path.read_text(encoding="utf-8"))
    report = load_report(path)
    again = json.loads(report.to_json())
    for key in ("overhead", "compute_floor", "environment", "best", "tuning"):
        assert again[key] == written.get(key), key
    # the same keys in the same order; format-1 reports had no "command", the rest a null "profile"
    assert [k for k in again if k in written] == [k for k in written if k != "profile"]
    assert set(again) - set(written) <= {"command"}
    assert json.loads(BenchReport.from_dict(again).to_json()) == again


def test_the_context_blocks_are_typed() -> None:
    report = load_report(RESULTS / "cpu-resnext50_32x4d.json")
    assert isinstance(report.overhead, HarnessOverhead)
    assert report.overhead.backend == "onnxruntime-cpu" and report.overhead.blocks == 20
    assert isinstance(report.compute_floor, ComputeFloor)
    assert report.compute_floor.nominal_basis.endswith("(AVX2, 2 FMA pipes)")


def test_a_null_figure_reads_back_as_nan_and_writes_back_as_null(tmp_path: Path) -> None:
    data = json.loads((RESULTS / "cpu-resnet50.json").read_text(encoding="utf-8"))
    data["compute_floor"]["best_batch1_ms"] = None
    report = BenchReport.from_dict(data)
    assert report.compute_floor is not None and math.isnan(report.compute_floor.best_batch1_ms)
    assert json.loads(report.to_json())["compute_floor"]["best_batch1_ms"] is None


@pytest.mark.parametrize("block", ["overhead", "compute_floor"])
def test_a_context_block_of_another_shape_is_refused_by_name(block: str) -> None:
    data = json.loads((RESULTS / "cpu-resnet50.json").read_text(encoding="utf-8"))
    del data[block][next(iter(data[block]))]
    with pytest.raises(BenchmarkError, match="not a resnext-deploy benchmark report"):
        BenchReport.from_dict(data, "r.json")
