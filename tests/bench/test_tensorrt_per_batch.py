"""bench on TensorRT measures each batch size with an engine built for that size (its profile's
min = opt = max = the batch size), one runner alive at a time, and every row of the report
says which profile its engine had. Simulated on the CPU: the runner records the session config
it was given and answers with the profile onnxruntime would have been handed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rich.console import Console

from resnext_deploy.bench import backends, run
from resnext_deploy.bench.backends import BenchBackend
from resnext_deploy.bench.files import write_reports
from resnext_deploy.bench.report import load_report
from resnext_deploy.bench.run import BenchConfig, run_benchmark
from resnext_deploy.render import print_bench
from resnext_deploy.runtime.base import Runner
from resnext_deploy.runtime.providers import Provider, SessionConfig, TensorRTOptions
from resnext_deploy.runtime.tensorrt import TensorRTProfile, resolve_engine
from resnext_deploy.timing import Timing


class PretendTensorRT(Runner):
    """What bench builds for an onnxruntime backend on TensorRT, without a session."""

    alive: list[PretendTensorRT] = []
    built: list[TensorRTProfile | None] = []
    peak = 0

    def __init__(self, path: Path, config: SessionConfig, name: str) -> None:
        assert config.provider is Provider.TENSORRT
        self.name, self.device = name, "cuda"
        self.engine = resolve_engine(path, config.tensorrt)
        PretendTensorRT.alive.append(self)
        PretendTensorRT.built.append(self.engine.profile)
        PretendTensorRT.peak = max(PretendTensorRT.peak, len(PretendTensorRT.alive))

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return np.zeros((batch.shape[0], 7), np.float32)

    def shape_profile(self) -> TensorRTProfile | None:
        return self.engine.profile

    def describe(self) -> dict[str, Any]:
        profile = self.engine.profile
        return {
            "name": self.name,
            "tensorrt": {"engine_key": self.engine.key, "profile": profile and profile.to_dict()},
            "session_build": {"seconds": 1.5, "cache_dir": str(self.engine.cache_dir)},
        }

    def close(self) -> None:
        PretendTensorRT.alive.remove(self)


@pytest.fixture
def pretend_tensorrt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[PretendTensorRT]:
    monkeypatch.setattr(PretendTensorRT, "alive", [])
    monkeypatch.setattr(PretendTensorRT, "built", [])
    monkeypatch.setattr(PretendTensorRT, "peak", 0)
    monkeypatch.setattr(backends, "_ort", PretendTensorRT)
    monkeypatch.setattr(run, "check_provider", lambda provider, config: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return PretendTensorRT


def test_each_batch_size_gets_an_engine_tuned_for_it(
    pretend_tensorrt: type[PretendTensorRT], tiny_export: Path, tmp_path: Path
) -> None:
    config = BenchConfig(
        backends=(BenchBackend.ONNXRUNTIME,),
        batch_sizes=(1, 4, 16),
        provider=Provider.TENSORRT,
        tensorrt=TensorRTOptions(fp16=True),
        measure_overhead=False,
        timing=Timing(warmup=0, min_iters=2, min_time_s=0.0, max_iters=2),
    )
    report = run_benchmark(str(tiny_export), config).report
    built = pretend_tensorrt.built
    assert [(p.min_batch, p.opt_batch, p.max_batch) for p in built if p] == [
        (1, 1, 1), (4, 4, 4), (16, 16, 16)
    ]  # fmt: skip
    assert len(built) == 3 and pretend_tensorrt.peak == 1 and pretend_tensorrt.alive == []
    rows = {m.batch_size: m for m in report.results}
    for b, m in rows.items():
        assert m.status == "ok" and m.engine_profile is not None
        assert (m.engine_profile.min_batch, m.engine_profile.opt_batch) == (b, b)
        assert m.engine_profile.max_batch == b
    (described,) = report.backends
    assert [e["batch_size"] for e in described["engines"]] == [1, 4, 16]
    assert described["engines"][1]["tensorrt"]["profile"]["opt_batch"] == 4
    assert report.config["tensorrt"]["fp16"] is True
    check_report_files(report, tmp_path)


def check_report_files(report: Any, out: Path) -> None:
    """JSON, CSV, Markdown and the console all say which profile each row ran."""
    paths = write_reports(report, out, "trt")
    again = load_report(paths["json"])
    assert [m.engine_profile for m in again.results] == [m.engine_profile for m in report.results]
    assert json.loads(paths["json"].read_text())["results"][2]["engine_profile"]["opt_batch"] == 16
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    assert [(r["batch_size"], r["engine_opt_batch"]) for r in rows] == [
        ("1", "1"), ("4", "4"), ("16", "16")
    ]  # fmt: skip
    markdown = paths["md"].read_text()
    assert "onnxruntime-tensorrt: batch 1: 1/1/1, batch 4: 4/4/4, batch 16: 16/16/16" in markdown
    console = Console(file=io.StringIO(), width=200)
    print_bench(console, report)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    assert "1: 1/1/1, 4: 4/4/4, 16: 16/16/16" in text
    assert "onnxruntime-tensorrt (batch 16): engine built in 1.5 s" in text


def test_other_providers_keep_one_runner_for_every_batch_size(tmp_path: Path) -> None:
    ctx = backends.BackendContext(model=None, export_dir=tmp_path, provider=Provider.CUDA)
    (tmp_path / "model.onnx").write_bytes(b"")
    assert not backends.backend_factory(BenchBackend.ONNXRUNTIME, ctx).per_batch
    trt = backends.BackendContext(model=None, export_dir=tmp_path, provider=Provider.TENSORRT)
    assert backends.backend_factory(BenchBackend.ONNXRUNTIME, trt).per_batch
