"""verify on GPU providers, simulated on the CPU: every provider whose fp32 session starts also
runs the fp16 variant, TensorRT's fp32 gets the TF32 tolerance and a profile for every batch
compared, and the report carries each non-CPU backend's node placement."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from resnext_deploy.artifact import FP16_TOLERANCE, FP32_TOLERANCE, open_artifact
from resnext_deploy.runtime import ort as ort_runtime
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import Provider, SessionConfig
from resnext_deploy.verify import VerifyConfig, verify_artifact


class PretendGpuRunner(OrtRunner):
    """Runs on the CPU provider but keeps the config it was asked for (what verify sees)."""

    asked: list[tuple[str, SessionConfig]] = []

    def __init__(self, model: Any, config: SessionConfig | None = None, name: str | None = None):
        config = config or SessionConfig()
        super().__init__(model, replace(config, provider=Provider.CPU), name)
        self.config = config
        self.name = name or f"onnxruntime-{config.provider.value}"
        PretendGpuRunner.asked.append((self.name, config))


def test_fp16_runs_on_every_provider_that_started(
    tiny_fp16_export: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ort_runtime, "OrtRunner", PretendGpuRunner)
    monkeypatch.setattr(PretendGpuRunner, "asked", [])
    config = VerifyConfig(providers=(Provider.CPU, Provider.TENSORRT), auto_cuda=False)
    report = verify_artifact(open_artifact(tiny_fp16_export), config)
    tolerances = {b.backend: b.tolerance for b in report.backends}
    assert tolerances["onnxruntime-cpu"] == FP32_TOLERANCE
    assert tolerances["onnxruntime-tensorrt"] == FP16_TOLERANCE  # TF32, no switch to turn it off
    assert tolerances["onnxruntime-cpu-fp16"] == FP16_TOLERANCE
    assert tolerances["onnxruntime-tensorrt-fp16"] == FP16_TOLERANCE
    assert report.passed
    assert set(report.placements) == {"onnxruntime-tensorrt", "onnxruntime-tensorrt-fp16"}
    assert report.to_dict()["placements"]["onnxruntime-tensorrt"]["convs"] > 0
    asked = dict(PretendGpuRunner.asked)
    assert asked["onnxruntime-tensorrt"].tensorrt.batch_sizes == (1, 2, 3, 8)
    assert asked["onnxruntime-tensorrt-fp16"].tensorrt.batch_sizes == (1, 2, 3, 8)
    assert not asked["onnxruntime-tensorrt"].cuda.use_tf32
