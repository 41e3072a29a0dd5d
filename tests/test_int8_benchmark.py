"""benchmarks/int8.py: the targets, the side-by-side table and the result files, on synthetic
numbers (the benchmark itself takes minutes; ``--smoke`` runs it end to end)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("int8_benchmark", ROOT / "benchmarks/int8.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


bench = _load()

ORT_FP32 = "onnxruntime fp32"
ORT_EXPORT = "onnxruntime int8 (export)"
ORT_NNCF = "onnxruntime int8 (NNCF)"
OV_FP32 = "OpenVINO fp32"
OV_EXPORT = "OpenVINO int8 (export)"
OV_NNCF = "OpenVINO int8 (NNCF)"


def side(path: str, b1: float, b8: float, agree: float | None, cos: float | None) -> dict:
    return {
        "path": path,
        "speedup_b1": b1,
        "speedup_b8": b8,
        "digits_agreement": agree,
        "photo_min_cosine": cos,
        "photo_mean_cosine": cos,
    }


def by_target(rows: list[dict[str, Any]]) -> dict[tuple[str, str], bool]:
    return {(r["path"], r["key"]): r["met"] for r in rows}


def test_targets_met_and_missed_are_told_apart() -> None:
    rows = bench.targets(
        [
            side(ORT_EXPORT, 1.49, 1.5, 1.0, 0.9995),
            side(OV_NNCF, 2.0, 1.79, 0.995, 0.9991),
        ]
    )
    met = by_target(rows)
    assert met[(OV_NNCF, "speedup_b1")] is True
    assert met[(OV_NNCF, "speedup_b8")] is False  # 1.79 < 1.8
    assert met[(OV_NNCF, "digits_agreement")] is True
    assert met[(OV_NNCF, "photo_min_cosine")] is True
    assert met[(ORT_EXPORT, "speedup_b1")] is False  # 1.49 < 1.5
    assert met[(ORT_EXPORT, "speedup_b8")] is True  # the threshold itself is met
    assert len(rows) == 6


def test_best_path_is_the_one_meeting_most_targets_not_the_fastest() -> None:
    rows = bench.targets(
        [
            side(OV_NNCF, 3.0, 2.5, 0.95, 0.99),  # fastest, inaccurate
            side(OV_EXPORT, 2.0, 1.9, 0.999, 0.9995),
            side(ORT_EXPORT, 1.6, 1.6, 1.0, 0.9999),
        ]
    )
    best = {r["path"] for r in rows if r["target"].startswith("best")}
    assert best == {OV_EXPORT}
    assert all(r["met"] for r in rows)


def test_a_target_not_measured_is_not_met() -> None:
    rows = bench.targets([side(OV_NNCF, 2.0, 1.9, None, 0.9999)])
    met = by_target(rows)
    assert met[(OV_NNCF, "digits_agreement")] is False
    assert bench.fmt("digits_agreement", None) == "not measured"


def test_centred_cosine_ignores_a_shift_and_sees_a_change() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 10)).astype(np.float32)
    assert np.allclose(bench.centred_cosines(a, a + 5.0), 1.0)
    assert np.allclose(bench.centred_cosines(a, -a), -1.0)
    noisy = a + 0.5 * rng.standard_normal((3, 10)).astype(np.float32)
    assert (bench.centred_cosines(a, noisy) < 0.999).all()


def synthetic(b1: dict[str, float], b8: dict[str, float]) -> dict[str, Any]:
    """Result data as :func:`bench.measure` and ``main`` build it, from speed-ups vs fp32."""
    samples = {n: {1: [50.0 / b1[n]] * 3, 8: [400.0 / b8[n]] * 3} for n in b1}
    photos = {n: {"min_cosine": 0.9995, "mean_cosine": 0.9998} for n in b1 if n != ORT_FP32}
    digits = {n: {"agreeing": 359, "top1_agreement": 1.0, "accuracy": 0.97} for n in b1}
    data: dict[str, Any] = {
        "command": "python benchmarks/int8.py",
        "seconds": 900,
        "phase_seconds": {"files": 200.0, "timing": 500.0},
        "environment": {
            "cpu": "AMD EPYC",
            "cpu_isa": {"summary": "AVX2", "int8_accelerated": False},
            "threads": 2,
            "cpu_count": 2,
            "date": "2026-12-06",
            "versions": {"onnxruntime-gpu": "1.31.1", "openvino": "2026.4.1", "nncf": "3.4.0"},
            "load_average_1min": {"before_timing": 0.4, "after_timing": 2.0},
        },
        "setup": {"arch": "resnext50_32x4d", "input_size": 224, "rounds": 3},
        "rows": bench.summarize(samples, ORT_FP32),
        "photos": {"images": 16, "reference": ORT_FP32, "paths": photos},
        "layers": {
            "int8 (export)": {
                "onnxruntime": {"int8_convs": 37, "fp32_convs": 16, "from": "export"},
                "OpenVINO": {"by_type": {"Convolution f32": 16, "Convolution u8": 37}},
            }
        },
        "int8_export": None,
        "quantizers": {
            "export_int8_s": 60.0,
            "nncf": {
                "seconds": 30.0,
                "subset_size": 64,
                "returns": "ModelProto",
                "opset": 20,
                "quantize_linear": 71,
                "dequantize_linear": 125,
                "warnings": [],
            },
        },
        "profile_batch1": {"profiles": []},
        "digits": {
            "arch": "resnext11_mini",
            "epochs": 10,
            "val_accuracy": 0.97,
            "held_out_images": 359,
            "calibration_images": 256,
            "reported_by_export": 1.0,
            "fp32_layers": [],
            "nncf": {"seconds": 3.0},
            "paths": digits,
        },
    }
    data["side_by_side"] = bench.side_by_side(data)
    data["targets"] = bench.targets(data["side_by_side"])
    return data


def target_line(text: str, path: str, what: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.startswith("|") and what in ln and path in ln]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(("b8", "result"), [(1.85, "**met**"), (1.75, "**not met**")])
def test_markdown_says_whether_each_target_is_met(b8: float, result: str) -> None:
    b1 = {ORT_FP32: 1.0, ORT_EXPORT: 1.3, OV_FP32: 1.0, OV_EXPORT: 2.0, OV_NNCF: 1.95}
    speeds8 = {ORT_FP32: 1.0, ORT_EXPORT: 1.6, OV_FP32: 0.9, OV_EXPORT: b8, OV_NNCF: 1.5}
    text = bench.markdown(synthetic(b1, speeds8))
    line = target_line(text, OV_EXPORT, "batch 8 >= 1.8")
    assert line.endswith(f"| {result} |")
    assert "2.00x" in target_line(text, OV_EXPORT, "batch 1 >= 1.9")
    assert target_line(text, ORT_EXPORT, "batch 1 >= 1.5").endswith("| **not met** |")
    assert target_line(text, ORT_EXPORT, "batch 8 >= 1.5").endswith("| **met** |")
    assert "onnxruntime 1.31.1, OpenVINO 2026.4.1, NNCF 3.4.0" in text
    assert "0.40 before timing, 2.00 after" in text


def test_the_four_result_files_are_written(tmp_path: Path) -> None:
    b1 = {ORT_FP32: 1.0, ORT_EXPORT: 1.3, ORT_NNCF: 1.2, OV_EXPORT: 2.0, OV_NNCF: 2.1}
    data = synthetic(b1, dict(b1))
    bench.write(data, tmp_path, "cpu-int8")
    assert {p.name for p in tmp_path.iterdir()} == {
        f"cpu-int8.{ext}" for ext in ("json", "csv", "md", "png")
    }
    rows = list(csv.DictReader((tmp_path / "cpu-int8.csv").open()))
    assert len(rows) == 2 * len(b1)
    nncf = next(r for r in rows if r["path"] == OV_NNCF and r["batch_size"] == "1")
    assert float(nncf["speedup_vs_ort_fp32"]) == pytest.approx(2.1)
    saved = json.loads((tmp_path / "cpu-int8.json").read_text())
    assert [r["path"] for r in saved["side_by_side"]] == [ORT_EXPORT, ORT_NNCF, OV_EXPORT, OV_NNCF]
