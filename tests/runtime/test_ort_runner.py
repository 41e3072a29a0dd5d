"""OrtRunner's IO binding, checked on the CPU provider with the same onnxruntime calls a GPU
session makes (OrtValue inputs updated in place, pre-allocated bound outputs, run_with_iobinding,
copy_outputs_to_cpu), against a plain onnxruntime session as the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.runtime.ort import GPU_GRAPH_ID, OrtRunner
from resnext_deploy.runtime.providers import CudaOptions, Provider, SessionConfig, TensorRTOptions

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def model() -> bytes:
    return tiny_resnext_onnx()


def reference(model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def batch(n: int) -> np.ndarray:
    return RNG.standard_normal((n, 3, 16, 16), dtype=np.float32)


def test_bound_calls_equal_a_plain_session_at_every_batch_size(model: bytes) -> None:
    ref = reference(model)
    runner = OrtRunner(model)
    fetched = []
    for n in (1, 4, 2):
        x = batch(n)
        bound = runner.bind(x)
        bound.run()
        out = bound.fetch()
        np.testing.assert_allclose(out, ref(x), rtol=1e-5, atol=1e-6)
        fetched.append((out, ref(x)))
    for out, expected in fetched:  # fetched arrays are copies: later runs do not touch them
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_bound_calls_of_one_shape_each_run_their_own_batch(model: bytes) -> None:
    ref = reference(model)
    runner = OrtRunner(model)
    a, b = batch(3), batch(3)
    first, second = runner.bind(a), runner.bind(b)
    fetched = []
    for call, x in ((first, a), (second, b), (first, a)):
        call.run()
        fetched.append((call.fetch(), ref(x)))
        np.testing.assert_allclose(fetched[-1][0], fetched[-1][1], rtol=1e-5, atol=1e-6)
    for out, expected in fetched:  # copies, not views of the buffer the next run overwrites
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_binding_never_writes_into_the_callers_array(model: bytes) -> None:
    runner = OrtRunner(model)
    x = batch(2)
    kept = x.copy()
    runner.bind(x).run()
    runner.bind(-x).run()  # same shape: the bound buffer is updated in place
    np.testing.assert_array_equal(x, kept)


def two_output_model() -> bytes:
    """tiny_resnext_onnx with a softmax output after the logits, as the preprocessing variant."""
    proto = onnx.load_model_from_string(tiny_resnext_onnx())
    proto.graph.node.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    proto.graph.output.append(
        helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 5])
    )
    return proto.SerializeToString()


def test_every_output_is_bound_ahead_and_keeps_its_buffer() -> None:
    model = two_output_model()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    runner = OrtRunner(model)
    x = batch(4)
    bound = runner.bind(x)
    bound.run()
    shaped = runner._last  # the shape's binding (one per shape)
    assert shaped is not None
    pointers = [v.data_ptr() for v in shaped.binding.get_outputs()]
    bound.run()
    assert [v.data_ptr() for v in shaped.binding.get_outputs()] == pointers
    logits, probabilities = session.run(None, {"input": x})
    np.testing.assert_allclose(bound.fetch(), logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        shaped.binding.copy_outputs_to_cpu()[1], probabilities, rtol=1e-5, atol=1e-6
    )


def test_end_to_end_call_copies_in_and_out_through_the_same_binding(model: bytes) -> None:
    """On a GPU, bind() and bind_end_to_end() of one shape must share one binding: a CUDA graph
    replays the buffers it was captured with, so a second binding would never be written."""
    ref = reference(model)
    runner = OrtRunner(model)
    runner.device = "cuda"  # take the GPU code path; the buffers stay on the CPU provider
    x = batch(4)
    bound = runner.bind(x)
    bound.run()
    binding = runner._last  # the shape's binding
    e2e = runner.bind_end_to_end(-x)
    assert e2e is not None
    for _ in range(2):
        e2e.run()
        assert runner._last is binding
        runner.sync()
        np.testing.assert_allclose(e2e.fetch(), ref(-x), rtol=1e-5, atol=1e-6)
        bound.run()
        np.testing.assert_allclose(bound.fetch(), ref(x), rtol=1e-5, atol=1e-6)


def test_cuda_graph_sessions_get_one_graph_id_per_shape(
    model: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bookkeeping on the CPU provider (which ignores gpu_graph_id): ids 1, 2, ... per shape,
    0 is onnxruntime's own; the bindings of earlier shapes stay alive (a graph pins them)."""
    monkeypatch.setattr(OrtRunner, "uses_cuda_graph", property(lambda self: True))
    ref = reference(model)
    runner = OrtRunner(model)
    ids = {}
    for n in (1, 4, 1, 8, 4):
        x = batch(n)
        np.testing.assert_allclose(runner.infer(x), ref(x), rtol=1e-5, atol=1e-6)
        ids.setdefault(n, set()).add(runner._last.options.get_run_config_entry(GPU_GRAPH_ID))
    assert ids == {1: {"1"}, 4: {"2"}, 8: {"3"}}
    assert len(runner._bound) == 3


def test_without_graphs_only_the_current_shapes_buffers_are_kept(model: bytes) -> None:
    runner = OrtRunner(model)
    for n in (1, 4, 8):
        runner.bind(batch(n)).run()
    assert len(runner._bound) == 1


def test_placement_counts_every_node_of_the_graph(model: bytes) -> None:
    graph = onnx.load_model_from_string(model).graph
    convs = sum(n.op_type == "Conv" for n in graph.node)
    config = SessionConfig(optimization_level="disable")
    placement = OrtRunner(model, config).placement()
    assert placement.nodes == {"CPUExecutionProvider": len(graph.node)}
    assert (placement.convs, placement.convs_on_requested) == (convs, convs) == (4, 4)
    assert placement.ok and placement.elsewhere == {}


def test_session_build_time_is_reported(model: bytes) -> None:
    runner = OrtRunner(model)
    described = runner.describe()
    assert 0 < described["session_build"]["seconds"] < 60
    assert described["session_build"]["from_cache"] is None  # no TensorRT cache involved


@pytest.mark.gpu
def test_cuda_graph_replays_see_in_place_updates_for_every_shape(
    model: bytes, cuda_or_skip: None
) -> None:
    ref = reference(model)
    config = SessionConfig(
        provider=Provider.CUDA, cuda=CudaOptions(use_tf32=False, enable_cuda_graph=True)
    )
    with OrtRunner(model, config) as runner:
        xs = {n: batch(n) for n in (1, 4, 8)}
        for x in xs.values():
            for _ in range(3):  # warm-up runs, then the capture
                runner.infer(x)
        for scale in (1.0, -2.0):  # replays of each graph after all were captured
            for x in xs.values():
                np.testing.assert_allclose(
                    runner.infer(scale * x), ref(scale * x), rtol=1e-3, atol=1e-5
                )


@pytest.mark.gpu
def test_cuda_graph_bind_then_end_to_end_on_one_shape(model: bytes, cuda_or_skip: None) -> None:
    """What the benchmark does at each batch size: the bound call, then the end-to-end call."""
    ref = reference(model)
    config = SessionConfig(provider=Provider.CUDA, cuda=CudaOptions(enable_cuda_graph=True))
    with OrtRunner(model, config) as runner:
        x = batch(4)
        bound = runner.bind(x)
        for _ in range(4):
            bound.run()
        runner.sync()
        np.testing.assert_allclose(bound.fetch(), ref(x), rtol=1e-2, atol=1e-4)
        e2e = runner.bind_end_to_end(-x)
        assert e2e is not None
        for _ in range(2):
            e2e.run()
        runner.sync()
        np.testing.assert_allclose(e2e.fetch(), ref(-x), rtol=1e-2, atol=1e-4)
        memory = runner.device_memory()
        assert memory is not None and memory.mb > 0


@pytest.mark.gpu
def test_tensorrt_builds_at_creation_and_reuses_its_cache(
    model: bytes, cuda_or_skip: None, tmp_path: Path
) -> None:
    import ctypes

    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        pytest.skip("TensorRT's libraries are not installed here")
    options = TensorRTOptions(cache_dir=str(tmp_path), batch_sizes=(1, 8))
    config = SessionConfig(provider=Provider.TENSORRT, tensorrt=options)
    ref = reference(model)
    with OrtRunner(model, config) as first:
        assert first.build.from_cache is False
        x = batch(8)
        np.testing.assert_allclose(first.infer(x), ref(x), rtol=1e-2, atol=1e-3)
    with OrtRunner(model, config) as second:
        assert second.build.from_cache is True
