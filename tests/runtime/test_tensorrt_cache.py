"""TensorRT's engine cache is keyed by the model's weights and the engine options: two exports of
one architecture (both ``model.onnx``, same node and initializer names, which is all
onnxruntime's own engine key looks at) never share an engine folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import pytest

from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.runtime.providers import (
    Provider,
    SessionConfig,
    TensorRTOptions,
    create_session,
)
from resnext_deploy.runtime.tensorrt import resolve_engine
from tests.runtime.test_providers import FakeSession

TRT = "TensorrtExecutionProvider"


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    monkeypatch.setattr(FakeSession, "created", [])
    monkeypatch.setattr(FakeSession, "active", [TRT, "CUDAExecutionProvider"])
    monkeypatch.setattr(FakeSession, "placed", None)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


def export(folder: Path, seed: int) -> Path:
    """An export of the same architecture with other weights, named like every export."""
    folder.mkdir(parents=True)
    path = folder / "model.onnx"
    path.write_bytes(tiny_resnext_onnx(seed))
    return path


def engine_folder(fake: type[FakeSession], model: Any, options: TensorRTOptions) -> str:
    """The engine cache folder create_session hands to onnxruntime for ``model``."""
    create_session(model, SessionConfig(provider=Provider.TENSORRT, tensorrt=options))
    name, passed = fake.created[-1].providers[0]
    assert name == TRT
    return str(passed["trt_engine_cache_path"])


def test_other_weights_get_another_engine_folder_and_the_same_export_the_same(
    fake_trt: type[FakeSession], tmp_path: Path
) -> None:
    first, retrained = export(tmp_path / "a", seed=0), export(tmp_path / "b", seed=1)
    options = TensorRTOptions(cache_dir=str(tmp_path / "trt"), batch_sizes=(1, 8))
    a = engine_folder(fake_trt, first, options)
    assert engine_folder(fake_trt, retrained, options) != a
    assert engine_folder(fake_trt, first, options) == a  # the same export: its engine is reused
    assert engine_folder(fake_trt, first.read_bytes(), options) == a  # bytes hash alike
    assert Path(a).parent == tmp_path / "trt" and Path(a).is_dir()


def test_options_that_change_the_engine_change_the_folder(
    fake_trt: type[FakeSession], tmp_path: Path
) -> None:
    model = export(tmp_path / "m", seed=0)
    base = TensorRTOptions(cache_dir=str(tmp_path / "trt"), batch_sizes=(1, 8))
    folder = engine_folder(fake_trt, model, base)
    changed = {
        "fp16": TensorRTOptions(cache_dir=base.cache_dir, batch_sizes=(1, 8), fp16=True),
        "profile": base.for_batch(8),
        "builder level": TensorRTOptions(
            cache_dir=base.cache_dir, batch_sizes=(1, 8), builder_optimization_level=5
        ),
    }
    for what, options in changed.items():
        assert engine_folder(fake_trt, model, options) != folder, what
    # replaying the engine as a CUDA graph does not change the engine
    graph = TensorRTOptions(cache_dir=base.cache_dir, batch_sizes=(1, 8), cuda_graph=True)
    assert engine_folder(fake_trt, model, graph) == folder


def test_external_weights_are_part_of_the_key(tmp_path: Path) -> None:
    def save(folder: Path, seed: int) -> Path:
        folder.mkdir()
        proto = onnx.load_model_from_string(tiny_resnext_onnx(seed))
        path = folder / "model.onnx"
        onnx.save_model(
            proto, str(path), save_as_external_data=True, location="model.onnx.data",
            size_threshold=0,
        )  # fmt: skip
        return path

    a, b = save(tmp_path / "a", 0), save(tmp_path / "b", 1)
    assert a.read_bytes() == b.read_bytes()  # the graphs alone are identical
    options = TensorRTOptions(cache_dir=str(tmp_path / "trt"))
    assert resolve_engine(a, options).key != resolve_engine(b, options).key
