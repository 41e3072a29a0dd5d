"""The onnxruntime runner on TensorRT: it resolves the model's engine (sha256, profile) once and
watches that engine's own cache folder; TensorRT's own CUDA graph is fed through fixed buffers
and, as the provider keeps one graph per session, refuses a second input shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime import ort as ort_runtime
from resnext_deploy.runtime import providers
from resnext_deploy.runtime.ort import OrtRunner, _ShapeBinding
from resnext_deploy.runtime.providers import Provider, SessionConfig, TensorRTOptions
from resnext_deploy.runtime.tensorrt import resolve_engine
from tests.runtime.test_providers import FakeSession
from tests.runtime.test_tensorrt_cache import TRT, export


@dataclass
class FakeIO:
    name: str
    type: str = "tensor(float)"
    shape: tuple[Any, ...] = ("batch", 5)


class FakeRunnerSession(FakeSession):
    def get_inputs(self) -> list[FakeIO]:
        return [FakeIO("input")]

    def get_outputs(self) -> list[FakeIO]:
        return [FakeIO("logits")]

    def get_provider_options(self) -> dict[str, Any]:
        return dict([self.providers[0]])


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT sessions that record what they were given (see FakeSession)."""
    monkeypatch.setattr(FakeSession, "created", [])
    monkeypatch.setattr(FakeSession, "active", [TRT, "CUDAExecutionProvider"])
    monkeypatch.setattr(FakeSession, "placed", None)
    monkeypatch.setattr(ort, "InferenceSession", FakeRunnerSession)


@pytest.mark.usefixtures("fake_trt")
def test_the_runner_hashes_once_and_watches_its_own_engine_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls: list[Any] = []

    def counted(model: Any, options: TensorRTOptions) -> Any:
        calls.append(model)
        return resolve_engine(model, options)

    monkeypatch.setattr(ort_runtime, "resolve_engine", counted)
    monkeypatch.setattr(providers, "resolve_engine", counted)
    model = export(tmp_path / "m", seed=0)
    options = TensorRTOptions(cache_dir=str(tmp_path / "trt"), batch_sizes=(4,))
    runner = OrtRunner(model, SessionConfig(provider=Provider.TENSORRT, tensorrt=options))
    assert len(calls) == 1
    engine = resolve_engine(model, options)
    assert runner.build.cache_dir == str(engine.cache_dir)
    profile = runner.shape_profile()
    assert profile is not None and profile == engine.profile
    assert (profile.min_batch, profile.opt_batch, profile.max_batch) == (4, 4, 4)
    described = runner.describe()["tensorrt"]
    assert described["engine_key"] == engine.key
    assert described["profile"]["opt_batch"] == 4


@pytest.mark.usefixtures("fake_trt")
def test_tensorrt_cuda_graph_runs_through_fixed_buffers_for_one_shape(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    options = TensorRTOptions(cache_dir=str(tmp_path / "trt"), batch_sizes=(4,), cuda_graph=True)
    model = export(tmp_path / "m", seed=0)
    runner = OrtRunner(model, SessionConfig(provider=Provider.TENSORRT, tensorrt=options))
    assert runner.uses_cuda_graph
    assert runner.session.providers[0][1]["trt_cuda_graph_enable"] == "1"

    def buffers(batch: np.ndarray, graph_id: int) -> _ShapeBinding:
        return _ShapeBinding(binding=None, inputs=None, options=None)

    monkeypatch.setattr(runner, "_new_binding", buffers)
    runner._binding(np.zeros((4, 3, 16, 16), np.float32), owner=None)
    with pytest.raises(ConfigError, match="one input shape per session"):
        runner._binding(np.zeros((1, 3, 16, 16), np.float32), owner=None)
