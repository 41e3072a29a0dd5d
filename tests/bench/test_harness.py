"""Sweep logic, OOM stop, output checks, report writers and comparison, with fake runners and
tiny models."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from resnext_deploy.bench.backends import BackendFactory
from resnext_deploy.bench.compare import compare_reports
from resnext_deploy.bench.files import to_csv, to_markdown, write_reports
from resnext_deploy.bench.harness import (
    Status,
    harness_overhead,
    is_oom,
    sweep,
    tuning_variants,
)
from resnext_deploy.bench.report import BenchReport, load_report
from resnext_deploy.bench.roofline import ComputeFloor
from resnext_deploy.bench.run import BenchConfig
from resnext_deploy.cli import app
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.runtime.base import BoundCall, Runner
from resnext_deploy.runtime.providers import CudaOptions, Provider
from resnext_deploy.timing import Timing, measure

FAST = Timing(warmup=1, min_iters=3, min_time_s=0.0, max_iters=5)


def zeros(b: int) -> np.ndarray:
    return np.zeros((b, 3, 4, 4), np.float32)


class SleepRunner(Runner):
    """Sleeps ``per_image`` seconds per image; raises MemoryError above ``max_batch``;
    ``rows`` images of each batch are "run" (the batch[:1] bug when rows=1)."""

    def __init__(
        self,
        name: str,
        per_image: float,
        max_batch: int = 10**9,
        fail_at: int | None = None,
        rows: int | None = None,
    ) -> None:
        self.name, self.per_image, self.max_batch, self.fail_at, self.rows = (
            name,
            per_image,
            max_batch,
            fail_at,
            rows,
        )
        self.bound: list[int] = []
        self.closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((self.rows or batch.shape[0], 3), np.float32)

    def bind(self, batch: np.ndarray) -> BoundCall:
        b = batch.shape[0]
        self.bound.append(b)
        if b > self.max_batch:
            raise MemoryError(f"cannot allocate {b} images")
        if b == self.fail_at:
            raise RuntimeError("kernel exploded")
        return BoundCall(lambda: time.sleep(self.per_image * b), lambda: self.infer(batch))

    def close(self) -> None:
        self.closed = True


def spec(runner: Runner) -> BackendFactory:
    return BackendFactory(runner.name, lambda: runner)


def test_measure_reports_first_call_separately() -> None:
    calls = []

    def call() -> None:
        time.sleep(0.05 if not calls else 0.002)
        calls.append(1)

    first, stats = measure(call, lambda: None, FAST, batch_size=1)
    assert first >= 45 and stats.p50_ms < 20
    assert len(calls) == 1 + FAST.warmup + stats.n and stats.n >= FAST.min_iters


def test_measure_honours_the_time_budget() -> None:
    timing = Timing(warmup=0, min_iters=2, min_time_s=0.05, max_iters=1000, max_time_s=1.0)
    _, stats = measure(lambda: time.sleep(0.01), lambda: None, timing, 1)
    assert 3 <= stats.n <= 8


def test_sweep_stops_one_backend_at_oom_and_keeps_the_others() -> None:
    eager = SleepRunner("torch-eager", 0.002)
    small = SleepRunner("onnxruntime-cpu", 0.001, max_batch=2)
    result = sweep([spec(eager), spec(small)], (1, 2, 4, 8), zeros, FAST)
    by = {(m.backend, m.batch_size): m for m in result.results}
    assert [by["onnxruntime-cpu", b].status for b in (1, 2, 4, 8)] == ["ok", "ok", "oom", "skipped"]
    assert eager.closed and small.closed
    assert "out-of-memory at batch 4" in by["onnxruntime-cpu", 8].error
    assert small.bound == [1, 2, 4]  # nothing bound after the OOM
    assert all(by["torch-eager", b].status == "ok" for b in (1, 2, 4, 8))
    ratio = by["onnxruntime-cpu", 2].speedup_vs_eager
    assert ratio is not None and 1.3 < ratio < 2.7  # sleeps of 2 ms vs 4 ms per call


def test_other_errors_are_recorded_not_fatal() -> None:
    broken = SleepRunner("onnxruntime-cpu", 0.001, fail_at=2)
    result = sweep([spec(broken)], (1, 2, 4), zeros, FAST)
    assert [m.status for m in result.results] == ["ok", "error", "skipped"]
    assert result.results[1].error == "kernel exploded"


def test_a_backend_that_runs_part_of_the_batch_is_an_error_not_a_speedup() -> None:
    """The batch[:1] bug: the output has one row for a batch of 4, so the figure is refused."""
    partial = SleepRunner("onnxruntime-cpu", 0.0, rows=1)
    result = sweep([spec(partial)], (1, 4), zeros, FAST)
    assert [m.status for m in result.results] == [Status.OK, Status.ERROR]
    assert "not run whole" in result.results[1].error and result.results[1].stats is None
    assert result.results[0].output_shape == (1, 3)


def test_a_huge_batch_is_an_out_of_memory_not_a_crash() -> None:
    def make(b: int) -> np.ndarray:
        if b > 2:
            raise MemoryError("Unable to allocate 1.2 TiB")
        return zeros(b)

    result = sweep([spec(SleepRunner("x", 0.0))], (1, 5000000), make, FAST)
    assert [m.status for m in result.results] == [Status.OK, Status.OOM]


def test_on_a_gpu_one_backend_is_alive_at_a_time() -> None:
    alive: list[str] = []
    peak: list[int] = []

    class Tracked(SleepRunner):
        def __init__(self, name: str) -> None:
            super().__init__(name, 0.0)
            alive.append(name)
            peak.append(len(alive))

        def close(self) -> None:
            alive.remove(self.name)

    specs = [BackendFactory(n, lambda n=n: Tracked(n)) for n in ("a", "b", "c")]
    result = sweep(specs, (1, 2), zeros, FAST, interleave=False)
    assert max(peak) == 1 and alive == []
    assert [(m.backend, m.batch_size) for m in result.results] == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
        ("a", 2),
        ("b", 2),
        ("c", 2),
    ]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (MemoryError(), True),
        (RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"), True),
        (
            RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory"),
            True,
        ),
        (RuntimeError("shape mismatch"), False),
    ],
)
def test_oom_detection(exc: BaseException, expected: bool) -> None:
    assert is_oom(exc) is expected


def test_harness_overhead_is_measured_on_an_empty_call_and_related_to_latency() -> None:
    result = harness_overhead(lambda: time.sleep(0.003), lambda: None, blocks=4, per_block=2)
    assert 0 <= result.cost_us < 50  # clock reads and a list append, not milliseconds
    assert result.bare_ms == pytest.approx(3.0, rel=0.5)
    assert result.overhead_pct == pytest.approx(result.cost_us / 1e3 / result.bare_ms * 100)
    assert abs(result.paired_pct) < 50


def test_default_batch_sizes_depend_on_the_provider() -> None:
    assert BenchConfig().resolved_batch_sizes() == (1, 2, 4, 8, 16)
    assert BenchConfig(provider=Provider.CUDA).resolved_batch_sizes()[-1] == 256
    assert BenchConfig(batch_sizes=(8, 1, 8)).resolved_batch_sizes() == (1, 8)


def test_tune_needs_a_gpu_provider() -> None:
    with pytest.raises(ConfigError, match="cuda provider"):
        BenchConfig(tune=True)


def test_tuning_variants_change_one_option_each() -> None:
    base = CudaOptions()
    variants = tuning_variants(base)
    assert variants["baseline"] == base
    for label, opts in variants.items():
        differing = [k for k, v in opts.to_ort().items() if base.to_ort()[k] != v]
        assert len(differing) == (0 if label == "baseline" else 1), label


def _report(p50: dict[tuple[str, int], float | None]) -> dict[str, Any]:
    """A report as its JSON file holds it (format 1, as committed reports were written)."""
    results = []
    for (backend, b), v in p50.items():
        stats = (
            None
            if v is None
            else {
                "p50_ms": v,
                "p90_ms": v,
                "p95_ms": v,
                "p99_ms": v,
                "mean_ms": v,
                "std_ms": 0.0,
                "min_ms": v,
                "max_ms": v,
                "iqr_ms": 0.0,
                "cv": 0.0,
                "n": 10,
                "images_per_s": b / v * 1e3,
                "ms_per_image": v / b,
                "batch_size": b,
            }
        )
        results.append(
            {
                "backend": backend,
                "batch_size": b,
                "status": "ok" if v else "oom",
                "first_call_ms": 1.0,
                "stats": stats,
                "end_to_end": None,
                "speedup_vs_eager": None,
                "rss_mb": 100.0,
                "error": "",
            }
        )
    return {
        "model": "m",
        "arch": "m",
        "input_size": 8,
        "provider": "cpu",
        "threads": 2,
        "gmacs_per_image": 0.1,
        "batch_sizes": sorted({b for _, b in p50}),
        "results": results,
        "config": {"command": "resnext-deploy bench m"},
        "environment": {"cpu": "test cpu", "cpu_count": 2, "versions": {"torch": "x"}},
        "best": {},
        "overhead": None,
        "compute_floor": None,
    }


FLOOR = ComputeFloor(
    gflop_per_image=8.0,
    peak_gflops=160.0,
    peak_gflops_matmul=150.0,
    peak_gflops_nominal=160.0,
    nominal_basis="2 cores x 2.50 GHz x 32 FLOP/cycle (AVX2, 2 FMA pipes)",
    floor_ms_per_image=50.0,
    best_ms_per_image=60.0,
    best_batch1_ms=70.0,
    efficiency_best=50 / 60,
    efficiency_batch1=50 / 70,
)


def typed(p50: dict[tuple[str, int], float | None]) -> BenchReport:
    return BenchReport.from_dict(_report(p50))


def test_compare_flags_slowdowns_beyond_the_threshold_and_lost_results() -> None:
    old = typed({("ort", 1): 10.0, ("ort", 8): 50.0, ("eager", 1): 20.0})
    new = typed({("ort", 1): 10.5, ("ort", 8): 60.0, ("eager", 1): None})
    changes = {(c.backend, c.batch_size): c for c in compare_reports(old, new, threshold_pct=10)}
    assert changes["ort", 1].change_pct == pytest.approx(5.0) and not changes["ort", 1].regression
    assert changes["ort", 8].change_pct == pytest.approx(20.0) and changes["ort", 8].regression
    assert changes["eager", 1].regression  # measured before, missing now


def test_writers_produce_every_format(tmp_path: Path) -> None:
    report = typed(
        {("torch-eager", 1): 10.0, ("onnxruntime-cpu", 1): 5.0, ("onnxruntime-cpu", 2): None}
    )
    report.compute_floor = replace(FLOOR, best_batch1_ms=float("nan"))
    paths = write_reports(report, tmp_path, "r")
    text = paths["json"].read_text()
    assert "NaN" not in text and json.loads(text)["compute_floor"]["best_batch1_ms"] is None
    loaded = load_report(paths["json"])
    assert loaded.results[0].stats is not None and loaded.results[0].stats.p50_ms == 10.0
    assert loaded.results[2].status is Status.OOM and loaded.command == "resnext-deploy bench m"
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [r["status"] for r in rows] == ["ok", "ok", "oom"]
    assert float(rows[1]["p50_ms"]) == 5.0 and rows[2]["p50_ms"] == ""
    md = paths["md"].read_text()
    assert "| onnxruntime-cpu | 1 | 5.00 |" in md and "resnext-deploy bench m" in md
    assert "oom" in md and "test cpu" in md
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert to_csv(report).count("\n") == 4


def test_load_report_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(BenchmarkError, match="not a resnext-deploy benchmark"):
        load_report(tmp_path / "x.json")
    broken = _report({("ort", 1): 10.0})
    broken["results"][0]["stats"] = {"p50_ms": "fast"}
    (tmp_path / "y.json").write_text(json.dumps(broken))
    with pytest.raises(BenchmarkError, match="not a resnext-deploy benchmark"):
        load_report(tmp_path / "y.json")
    with pytest.raises(BenchmarkError, match="not found"):
        load_report(tmp_path / "missing.json")


def test_compare_command_exits_1_on_regression(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_report({("ort", 1): 10.0})))
    (tmp_path / "b.json").write_text(json.dumps(_report({("ort", 1): 13.0})))
    runner = CliRunner()
    res = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert res.exit_code == 1 and "REGRESSION" in res.stdout
    res = runner.invoke(
        app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--threshold", "50"]
    )
    assert res.exit_code == 0 and "no regressions" in res.stdout


def test_bench_cli_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "bench",
            "resnext11_mini",
            "--batch-sizes",
            "1,3",
            "--min-iters",
            "3",
            "--min-time",
            "0",
            "--warmup",
            "1",
            "--out",
            str(tmp_path),
            "--name",
            "tiny",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {r["backend"] for r in data["results"]} == {
        "torch-eager",
        "torchscript",
        "torchscript-optimized",
        "onnxruntime-cpu",
    }
    assert all(r["status"] == "ok" for r in data["results"])
    # Every backend ran the whole batch: one row of logits per image, and the throughput is the
    # batch over the median (the batch[:1] bug would show a 1-row output or be refused).
    for r in data["results"]:
        assert r["output_shape"] == [r["batch_size"], 1000], r["backend"]
        stats = r["stats"]
        assert stats["images_per_s"] == pytest.approx(r["batch_size"] / stats["p50_ms"] * 1e3)
    eager = [r for r in data["results"] if r["backend"] == "torch-eager"]
    assert all(r["speedup_vs_eager"] == pytest.approx(1.0) for r in eager)
    onnx_backend = next(b for b in data["backends"] if b["name"] == "onnxruntime-cpu")
    assert onnx_backend["providers"] == ["CPUExecutionProvider"]
    import torch

    assert data["threads"] >= 1
    assert data["environment"]["versions"]["torch"] == torch.__version__.split("+")[0]
    assert data["compute_floor"]["floor_ms_per_image"] > 0 and data["overhead"] is not None
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".csv", ".md", ".png"}


def test_bench_cuda_without_gpu_fails_before_any_work(tmp_path: Path) -> None:
    from tests.conftest import has_cuda

    if has_cuda():
        pytest.skip("this machine has a usable GPU")
    res = CliRunner().invoke(
        app, ["bench", "resnext11_mini", "--provider", "cuda", "--out", str(tmp_path)]
    )
    assert res.exit_code == 1 and "CUDAExecutionProvider was requested" in res.stderr
    assert "Traceback" not in res.output and list(tmp_path.iterdir()) == []


def test_bench_of_an_architecture_name_exports_the_variants_its_backends_run(
    tmp_path: Path,
) -> None:
    """``bench <arch> --backend onnxruntime-fp16`` exports the fp16 variant too (it used to
    export fp32 only and fail); int8 needs calibration images and is refused before any work."""
    quick = ["--batch-sizes", "2", "--min-iters", "2", "--min-time", "0", "--warmup", "1"]
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "resnext11_mini",
            "--backend",
            "onnxruntime-fp16",
            "--backend",
            "onnxruntime",
            "--no-overhead",
            "--out",
            str(tmp_path),
            "--json",
            *quick,
        ],
    )
    assert res.exit_code == 0, res.output
    rows = {r["backend"]: r for r in json.loads(res.stdout)["results"]}
    assert set(rows) == {"onnxruntime-cpu-fp16", "onnxruntime-cpu"}
    assert all(r["status"] == "ok" and r["output_shape"] == [2, 1000] for r in rows.values())
    res = CliRunner().invoke(
        app,
        [
            "bench",
            "resnext11_mini",
            "--backend",
            "onnxruntime-int8",
            "--out",
            str(tmp_path / "x"),
            *quick,
        ],
    )
    assert res.exit_code == 1 and "calibrated on images" in res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "x").exists()


def test_bench_unknown_backend(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app, ["bench", "resnext11_mini", "--backend", "tvm", "--out", str(tmp_path)]
    )
    assert res.exit_code != 0 and "tvm" in res.stderr and "Traceback" not in res.output


def test_ort_runner_binds_and_runs_the_whole_batch(tiny_export: Path) -> None:
    """The IO-bound call of the onnxruntime runner computes what plain onnxruntime computes for
    every image of the batch (not ``batch[:1]``)."""
    import onnxruntime as ort

    from resnext_deploy.runtime.ort import OrtRunner

    batch = np.random.default_rng(3).standard_normal((5, 3, 64, 64), dtype=np.float32)
    plain = ort.InferenceSession(
        str(tiny_export / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    expected = plain.run(None, {"input": batch})[0]
    with OrtRunner(tiny_export / "model.onnx") as runner:
        bound = runner.bind(batch)
        bound.run()
        runner.sync()
        got = bound.fetch()
        batch[:] = 0  # the binding holds its own copy of the input
        bound.run()
        assert np.allclose(bound.fetch(), got)
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_a_run_where_no_row_succeeded_shows_the_floor_without_nan(tmp_path: Path) -> None:
    """Every row failed (OOM): the floor is still said, and neither the terminal nor the
    Markdown says "nan ms" or "reaches nan%"."""
    from rich.console import Console

    from resnext_deploy.render import print_bench

    report = typed({("onnxruntime-cpu", 1): None, ("onnxruntime-cpu", 2): None})
    nan = float("nan")
    report.compute_floor = replace(
        FLOOR,
        best_batch1_ms=nan,
        best_ms_per_image=nan,
        efficiency_batch1=nan,
        efficiency_best=nan,
    )
    console = Console(record=True, width=200)
    print_bench(console, report)
    shown = console.export_text()
    markdown = to_markdown(report)
    for text in (shown, markdown):
        assert "nan" not in text.lower()
    assert f"compute floor {FLOOR.floor_ms_per_image:.1f} ms/image" in shown
    assert "No row was measured." in markdown
