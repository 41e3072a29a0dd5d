"""``bench --profile --provider tensorrt``: onnxruntime refuses to save the optimized graph of a
session with compiled nodes, so none is asked for there; each TensorRT engine is one entry,
labelled as such, and what no graph could map is listed. Simulated on the CPU with a session
that fails the way onnxruntime-gpu does."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

from resnext_deploy.bench.profile import (
    ProfileConfig,
    profile_markdown,
    profile_source,
)
from resnext_deploy.bench.source import bench_model
from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.profiling import TENSORRT_ENGINE, optimized_graph
from resnext_deploy.runtime.providers import Provider, SessionConfig
from tests.runtime.test_providers import FakeNode, FakeSubgraph

TRT = "TensorrtExecutionProvider"
ENGINE = "TensorrtExecutionProvider_TRTKernel_graph_main_graph_1234_0_0"
# onnxruntime's words (inference_session.cc) when a graph with compiled nodes is to be saved
COMPILED = (
    "[ONNXRuntimeError] : 1 : FAIL : Unable to serialize model as it contains compiled nodes. "
    "Please disable any execution providers which generate compiled nodes."
)


@dataclass
class Input:
    name: str = "input"


class CompiledSession:
    """A TensorRT session: every Conv inside one engine, a Shape node on the CPU."""

    created: list[CompiledSession] = []

    def __init__(self, model: Any, sess_options: Any, providers: Any, **kwargs: Any) -> None:
        if sess_options.optimized_model_filepath:
            raise ort_c.Fail(COMPILED)
        self.options, self.providers, self.runs = sess_options, providers, 0
        CompiledSession.created.append(self)

    def get_providers(self) -> list[str]:
        return [TRT, "CUDAExecutionProvider", "CPUExecutionProvider"]

    def disable_fallback(self) -> None:
        pass

    def get_provider_graph_assignment_info(self) -> list[FakeSubgraph]:
        cpu = FakeSubgraph("CPUExecutionProvider", [FakeNode("Shape")])
        return [FakeSubgraph(TRT, [FakeNode("Conv")] * 4), cpu]

    def get_inputs(self) -> list[Input]:
        return [Input()]

    def run(self, outputs: Any, feed: dict[str, Any]) -> None:
        self.runs += 1

    def end_profiling(self) -> str:
        assert self.options.enable_profiling
        events = []
        for i in range(self.runs):
            t = i * 1000
            events += [
                {"cat": "Session", "name": "model_run", "ts": t, "dur": 900},
                event(ENGINE, t + 1, 800, "TRTKernel_graph_main_graph_1234_0", TRT),
                event("Shape_7", t + 2, 10, "Shape", "CPUExecutionProvider"),
            ]
        path = Path(self.options.profile_file_prefix + ".json")
        path.write_text(json.dumps(events))
        return str(path)


def event(node: str, ts: int, dur: int, op: str, provider: str) -> dict[str, Any]:
    return {
        "cat": "Node",
        "name": f"{node}_kernel_time",
        "ts": ts,
        "dur": dur,
        "args": {"op_name": op, "provider": provider},
    }


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[CompiledSession]:
    monkeypatch.setattr(CompiledSession, "created", [])
    monkeypatch.setattr(ort, "InferenceSession", CompiledSession)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return CompiledSession


def test_tensorrt_is_profiled_without_saving_the_graph(
    compiled: type[CompiledSession], tiny_export: Path
) -> None:
    config = ProfileConfig(provider=Provider.TENSORRT, batch_sizes=(1, 4), runs=3, warmup=1)
    with bench_model(str(tiny_export)) as source:
        report = profile_source(source, config)
    assert len(compiled.created) == 2  # one profiled session per batch size, nothing else
    for session, b in zip(compiled.created, (1, 4), strict=True):
        assert not session.options.optimized_model_filepath
        name, options = session.providers[0]
        assert name == TRT and options["trt_profile_opt_shapes"] == f"input:{b}x3x64x64"
    prof = report.profiles[0].profile
    assert prof.provider == "tensorrt" and prof.runs == 3
    kinds = {k.kind: k for k in prof.kinds}
    assert kinds[TENSORRT_ENGINE].nodes == 1 and kinds[TENSORRT_ENGINE].ms == pytest.approx(0.8)
    assert "Shape (not mapped)" in kinds
    assert set(prof.unmapped) == {ENGINE, "Shape_7"}
    markdown = profile_markdown(report)
    assert "Not mapped to ONNX nodes (2;" in markdown and ENGINE in markdown
    assert list(report.to_dict()["profiles"][0]["unmapped"]) == sorted([ENGINE, "Shape_7"])


def test_saving_a_tensorrt_graph_is_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="compiled nodes"):
        optimized_graph(tmp_path / "m.onnx", SessionConfig(provider=Provider.TENSORRT), tmp_path)
