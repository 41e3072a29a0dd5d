from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from resnext_deploy.errors import ConfigError, ProviderUnavailableError
from resnext_deploy.artifact import ONNX_FILE
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    create_session,
)
from tests.conftest import has_cuda


class FakeSession:
    """Records what create_session hands to onnxruntime and reports chosen providers."""

    created: list[FakeSession] = []
    active: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def __init__(self, model: Any, sess_options: Any = None, providers: Any = None) -> None:
        self.model, self.sess_options, self.providers = model, sess_options, providers
        FakeSession.created.append(self)

    def get_providers(self) -> list[str]:
        return list(FakeSession.active)


@pytest.fixture
def fake_ort(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    FakeSession.created = []
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


def test_cuda_options_reach_the_session(fake_ort: type[FakeSession]) -> None:
    options = CudaOptions(
        device_id=1,
        cudnn_conv_algo_search="HEURISTIC",
        prefer_nhwc=True,
        use_tf32=False,
        cudnn_conv_use_max_workspace=False,
        gpu_mem_limit=2**30,
    )
    create_session(b"model", SessionConfig(provider=Provider.CUDA, cuda=options))
    (session,) = fake_ort.created
    name, passed = session.providers[0]
    assert name == "CUDAExecutionProvider"
    assert passed == {
        "device_id": "1",
        "cudnn_conv_algo_search": "HEURISTIC",
        "cudnn_conv_use_max_workspace": "0",
        "prefer_nhwc": "1",
        "use_tf32": "0",
        "enable_cuda_graph": "0",
        "gpu_mem_limit": str(2**30),
    }
    assert session.providers[1] == "CPUExecutionProvider"


def test_strict_mode_disables_cpu_fallback_and_lists_no_cpu(fake_ort: type[FakeSession]) -> None:
    create_session(b"model", SessionConfig(provider=Provider.CUDA, strict=True))
    (session,) = fake_ort.created
    assert [p[0] for p in session.providers] == ["CUDAExecutionProvider"]
    assert session.sess_options.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"


def test_tensorrt_comes_first_with_cuda_behind_it(fake_ort: type[FakeSession]) -> None:
    fake_ort.active = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    try:
        create_session(b"model", SessionConfig(provider=Provider.TENSORRT))
    finally:
        fake_ort.active = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    names = [p[0] if isinstance(p, tuple) else p for p in fake_ort.created[0].providers]
    assert names == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_guard_refuses_a_session_that_fell_back_to_cpu(fake_ort: type[FakeSession]) -> None:
    fake_ort.active = ["CPUExecutionProvider"]
    try:
        with pytest.raises(ProviderUnavailableError, match="never falls back silently"):
            create_session(b"model", SessionConfig(provider=Provider.CUDA))
    finally:
        fake_ort.active = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_invalid_algo_search_is_rejected() -> None:
    with pytest.raises(ConfigError, match="HEURISTIC"):
        CudaOptions(cudnn_conv_algo_search="FASTEST")


def test_thread_count_is_set_explicitly() -> None:
    so = SessionConfig(intra_op_threads=1).session_options()
    assert so.intra_op_num_threads == 1


def test_cuda_on_a_machine_without_gpu_fails_with_the_reason(tiny_export: Path) -> None:
    if has_cuda():
        pytest.skip("this machine has a usable GPU; the no-GPU error cannot be observed")
    with pytest.raises(ProviderUnavailableError) as info:
        OrtRunner(tiny_export / ONNX_FILE, SessionConfig(provider=Provider.CUDA))
    message = str(info.value)
    assert "CUDAExecutionProvider" in message
    assert ".so" in message  # the missing driver or library, as onnxruntime logged it


def test_strict_cuda_without_gpu_also_fails(tiny_export: Path) -> None:
    if has_cuda():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(ProviderUnavailableError):
        OrtRunner(tiny_export / ONNX_FILE, SessionConfig(provider=Provider.CUDA, strict=True))


@pytest.mark.gpu
def test_cuda_runner_matches_cpu(tiny_export: Path, cuda_or_skip: None) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32)
    cpu = OrtRunner(tiny_export / ONNX_FILE).infer(x)
    cuda = OrtRunner(tiny_export / ONNX_FILE, SessionConfig(provider=Provider.CUDA))
    assert cuda.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(cuda.infer(x), cpu, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_bench_on_cuda_binds_io_on_the_device(tmp_path: Path, cuda_or_skip: None) -> None:
    from resnext_deploy.bench.harness import BenchConfig, Timing
    from resnext_deploy.bench.run import run_benchmark

    config = BenchConfig(
        backends=("eager", "onnxruntime"),
        batch_sizes=(1, 4),
        provider=Provider.CUDA,
        measure_overhead=False,
        timing=Timing(warmup=1, min_iters=3, min_time_s=0.0),
    )
    report = run_benchmark("resnext11_mini", config)
    ort_rows = [m for m in report.results if m.backend == "onnxruntime-cuda"]
    assert all(m.status == "ok" and m.end_to_end is not None for m in ort_rows)
    described = next(b for b in report.backends if b["name"] == "onnxruntime-cuda")
    assert described["providers"][0] == "CUDAExecutionProvider"
    assert described["cuda_options"]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
