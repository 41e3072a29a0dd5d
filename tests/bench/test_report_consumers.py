"""What reads a benchmark report back: Triton's preferred batch sizes and the headline script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from resnext_deploy.cli import app
from tests.bench.test_harness import _report

ROOT = Path(__file__).resolve().parents[2]


def test_triton_takes_preferred_batch_sizes_from_a_bench_report(
    tiny_export: Path, tmp_path: Path
) -> None:
    # onnxruntime throughput: b1 100/s, b4 400/s, b8 457/s, b16 533/s (over max), eager faster.
    p50 = {("onnxruntime-cpu", 1): 10.0, ("onnxruntime-cpu", 4): 10.0}
    p50 |= {("onnxruntime-cpu", 8): 17.5, ("onnxruntime-cpu", 16): 30.0}
    p50 |= {("torch-eager", 2): 1.0}
    data = _report(p50)
    (tmp_path / "bench.json").write_text(json.dumps(data))
    # Independently: the two best onnxruntime throughputs up to max_batch_size 8.
    rows = [
        r
        for r in data["results"]
        if r["backend"].startswith("onnxruntime") and r["stats"] and r["batch_size"] <= 8
    ]
    expected = sorted(
        r["batch_size"]
        for r in sorted(rows, key=lambda r: r["stats"]["images_per_s"], reverse=True)[:2]
    )
    assert expected == [4, 8]
    res = CliRunner().invoke(
        app,
        [
            "triton",
            str(tiny_export),
            "--out",
            str(tmp_path / "repo"),
            "--max-batch-size",
            "8",
            "--bench-report",
            str(tmp_path / "bench.json"),
        ],
    )
    assert res.exit_code == 0, res.output
    config = next((tmp_path / "repo").glob("*/config.pbtxt")).read_text()
    assert "preferred_batch_size: [ 4, 8 ]" in config


def test_triton_refuses_a_bench_report_of_another_shape(tiny_export: Path, tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"results": [{"backend": 1}]}))
    res = CliRunner().invoke(
        app,
        [
            "triton",
            str(tiny_export),
            "--out",
            str(tmp_path / "repo"),
            "--bench-report",
            str(tmp_path / "other.json"),
        ],
    )
    assert res.exit_code == 1 and "not a resnext-deploy benchmark report" in res.stderr
    assert "Traceback" not in res.output and not (tmp_path / "repo").exists()


def test_headline_script_reads_the_committed_reports(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results"
    out = tmp_path / "headline.md"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "headline.py"),
            str(results / "cpu-resnext50_32x4d.json"),
            str(results / "cpu-resnet50.json"),
            "--int8",
            str(results / "cpu-resnext50_32x4d-int8.json"),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.read_text() == (results / "cpu-headline.md").read_text()
