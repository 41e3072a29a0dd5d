"""The provider guard: options reach onnxruntime, its fallback is off, placement is checked,
TensorRT gets profiles and caches, and a provider that cannot run fails with the reason."""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_c

from resnext_deploy.artifact import ONNX_FILE
from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.errors import ConfigError, DeployError, ProviderUnavailableError
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.placement import Placement, check_placement
from resnext_deploy.runtime.providers import (
    CudaOptions,
    Provider,
    SessionConfig,
    TensorRTOptions,
    check_provider,
    create_session,
    default_tensorrt_cache_dir,
)
from resnext_deploy.runtime.tensorrt import resolve_engine
from tests.conftest import has_cuda

CAPI = Path(ort.__file__).parent / "capi"


@dataclass
class FakeNode:
    op_type: str


@dataclass
class FakeSubgraph:
    ep_name: str
    nodes: list[FakeNode]

    def get_nodes(self) -> list[FakeNode]:
        return self.nodes


class FakeSession:
    """Records what create_session hands to onnxruntime; reports the providers in ``active`` and
    places the nodes in ``placed`` (provider -> op types), all on ``active[0]`` by default."""

    created: list[FakeSession] = []
    active: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    placed: dict[str, list[str]] | None = None

    def __init__(
        self, model: Any, sess_options: Any = None, providers: Any = None, **kwargs: Any
    ) -> None:
        self.model, self.sess_options, self.providers, self.kwargs = (
            model,
            sess_options,
            providers,
            kwargs,
        )
        self.fallback_disabled = False
        FakeSession.created.append(self)

    def get_providers(self) -> list[str]:
        return list(FakeSession.active)

    def disable_fallback(self) -> None:
        self.fallback_disabled = True

    def get_provider_graph_assignment_info(self) -> list[FakeSubgraph]:
        placed = FakeSession.placed or {FakeSession.active[0]: ["Conv", "Relu"]}
        return [FakeSubgraph(ep, [FakeNode(op) for op in ops]) for ep, ops in placed.items()]


@pytest.fixture
def fake_ort(monkeypatch: pytest.MonkeyPatch) -> type[FakeSession]:
    monkeypatch.setattr(FakeSession, "created", [])
    monkeypatch.setattr(FakeSession, "active", ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(FakeSession, "placed", None)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    return FakeSession


def provider_names(session: FakeSession) -> list[str]:
    return [p[0] if isinstance(p, tuple) else p for p in session.providers]


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


def test_onnxruntime_fallback_is_switched_off(fake_ort: type[FakeSession]) -> None:
    create_session(b"model", SessionConfig(provider=Provider.CUDA))
    (session,) = fake_ort.created
    assert session.kwargs.get("enable_fallback") == 0
    assert session.fallback_disabled


def test_a_provider_failing_mid_run_is_an_error_not_a_silent_rebuild(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """onnxruntime's run() rebuilds the session on other providers when an execution provider
    fails (C.EPFail), unless its fallback is off."""
    runner = OrtRunner(tiny_resnext_onnx())
    real = runner.session._sess

    class FailingRun:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def run(self, *args: Any, **kwargs: Any) -> Any:
            raise ort_c.EPFail("[ONNXRuntimeError] : 11 : EP_FAIL : the GPU went away")

    runner.session._sess = FailingRun()
    x = np.zeros((1, 3, 16, 16), dtype=np.float32)
    # onnxruntime's error, wrapped into one message naming the model and the cause (issue 23).
    with pytest.raises(DeployError, match="the GPU went away"):
        runner.infer(x)
    assert isinstance(runner.session._sess, FailingRun)  # not rebuilt behind our back
    assert "EP Error" not in capfd.readouterr().out


def tensorrt_loads() -> bool:
    try:
        ctypes.CDLL("libnvinfer.so.10")
    except OSError:
        return False
    return True


def test_tensorrt_that_cannot_start_says_why_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With onnxruntime's fallback on, a TensorRT failure at creation prints "EP Error" to stdout
    and retries on CUDA/CPU, and the real reason is lost."""
    if tensorrt_loads():
        pytest.skip("TensorRT's libraries load here; its missing-library error cannot be seen")
    with pytest.raises(ProviderUnavailableError) as info:
        create_session(tiny_resnext_onnx(), SessionConfig(provider=Provider.TENSORRT))
    assert "TensorrtExecutionProvider could not start" in str(info.value)
    assert "TensorRT libraries" in str(info.value)
    captured = capfd.readouterr()
    assert captured.out == ""
    assert "EP Error" not in captured.err


def test_strict_mode_disables_cpu_fallback_and_lists_no_cpu(fake_ort: type[FakeSession]) -> None:
    create_session(b"model", SessionConfig(provider=Provider.CUDA, strict=True))
    (session,) = fake_ort.created
    assert provider_names(session) == ["CUDAExecutionProvider"]
    assert session.sess_options.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"


def test_tensorrt_comes_first_with_cuda_behind_it(fake_ort: type[FakeSession]) -> None:
    fake_ort.active = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    create_session(b"model", SessionConfig(provider=Provider.TENSORRT))
    assert provider_names(fake_ort.created[0]) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_guard_refuses_a_session_that_fell_back_to_cpu(fake_ort: type[FakeSession]) -> None:
    fake_ort.active = ["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailableError, match="never falls back silently"):
        create_session(b"model", SessionConfig(provider=Provider.CUDA))


def test_guard_refuses_tensorrt_registered_first_that_took_no_node(
    fake_ort: type[FakeSession],
) -> None:
    """get_providers()[0] is TensorRT even when TensorRT cannot import the model (the uint8
    int8 model): the placement says where the convolutions really went."""
    fake_ort.active = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    fake_ort.placed = {
        "CUDAExecutionProvider": ["DequantizeLinear", "Conv", "Conv"],
        "CPUExecutionProvider": ["QLinearConv", "Shape"],
    }
    with pytest.raises(ProviderUnavailableError) as info:
        create_session(b"model", SessionConfig(provider=Provider.TENSORRT))
    message = str(info.value)
    assert "0 of 3 Conv nodes run on TensorrtExecutionProvider" in message
    assert "CPUExecutionProvider: QLinearConv x1, Shape x1" in message
    assert "CUDAExecutionProvider: Conv x2, DequantizeLinear x1" in message


def test_guard_accepts_shape_nodes_on_the_cpu(fake_ort: type[FakeSession]) -> None:
    fake_ort.placed = {
        "CUDAExecutionProvider": ["Conv", "Relu", "Conv", "Gemm"],
        "CPUExecutionProvider": ["Shape", "Gather"],
    }
    create_session(b"model", SessionConfig(provider=Provider.CUDA))


def test_guard_refuses_a_session_with_only_some_convolutions_on_the_provider(
    fake_ort: type[FakeSession],
) -> None:
    """Two of three convolutions on CUDA is not CUDA: the third runs on the CPU, with a copy
    across PCIe on each side of it."""
    fake_ort.placed = {
        "CUDAExecutionProvider": ["Conv", "Relu", "FusedConv", "Gemm"],
        "CPUExecutionProvider": ["Conv", "Shape"],
    }
    with pytest.raises(ProviderUnavailableError) as info:
        create_session(b"model", SessionConfig(provider=Provider.CUDA))
    message = str(info.value)
    assert "2 of 3 Conv nodes run on CUDAExecutionProvider" in message
    assert "CPUExecutionProvider: Conv x1, Shape x1" in message


@pytest.mark.parametrize(
    ("on_requested", "elsewhere", "ok"),
    [(3, 0, True), (2, 1, False), (1, 2, False), (0, 3, False)],
)
def test_placement_is_ok_only_with_every_convolution_on_the_provider(
    on_requested: int, elsewhere: int, ok: bool
) -> None:
    placement = Placement(
        requested="CUDAExecutionProvider",
        nodes={"CUDAExecutionProvider": on_requested + 1, "CPUExecutionProvider": elsewhere},
        elsewhere={"CPUExecutionProvider": {"Conv": elsewhere}} if elsewhere else {},
        convs=on_requested + elsewhere,
        convs_on_requested=on_requested,
    )
    assert placement.ok is ok and (placement.problem() is None) is ok
    assert Placement.from_dict(placement.to_dict()).ok is ok
    if ok:
        check_placement(placement)
    else:
        with pytest.raises(ProviderUnavailableError, match=f"{on_requested} of 3 Conv nodes"):
            check_placement(placement)


def test_every_session_records_where_its_nodes_run() -> None:
    so = SessionConfig().session_options()
    assert so.get_session_config_entry("session.record_ep_graph_assignment_info") == "1"


def test_the_probe_keeps_the_users_options(fake_ort: type[FakeSession]) -> None:
    config = SessionConfig(
        strict=True,
        intra_op_threads=1,
        cuda=CudaOptions(prefer_nhwc=True, cudnn_conv_algo_search="HEURISTIC"),
    )
    check_provider(Provider.CUDA, config)
    (session,) = fake_ort.created
    (cuda,) = session.providers  # strict: no CPU provider behind it
    assert cuda[1]["prefer_nhwc"] == "1"
    assert cuda[1]["cudnn_conv_algo_search"] == "HEURISTIC"
    assert session.sess_options.get_session_config_entry("session.disable_cpu_ep_fallback") == "1"
    assert session.sess_options.intra_op_num_threads == 1


def test_tensorrt_gets_profiles_caches_and_fp16(
    fake_ort: type[FakeSession], tmp_path: Path
) -> None:
    fake_ort.active = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    cache = tmp_path / "cache" / "trt"
    options = TensorRTOptions(fp16=True, cache_dir=str(cache), batch_sizes=(4, 1, 16))
    create_session(tiny_resnext_onnx(), SessionConfig(provider=Provider.TENSORRT, tensorrt=options))
    name, passed = fake_ort.created[0].providers[0]
    assert name == "TensorrtExecutionProvider"
    assert passed["trt_fp16_enable"] == "1"
    # the input of tiny_resnext_onnx is "input" [batch, 3, 16, 16]
    assert passed["trt_profile_min_shapes"] == "input:1x3x16x16"
    assert passed["trt_profile_opt_shapes"] == "input:16x3x16x16"
    assert passed["trt_profile_max_shapes"] == "input:16x3x16x16"
    assert passed["trt_engine_cache_enable"] == passed["trt_timing_cache_enable"] == "1"
    # engines in a folder of this model's own; kernel timings (no weights) shared
    assert Path(passed["trt_engine_cache_path"]).parent == cache
    assert passed["trt_timing_cache_path"] == str(cache)
    assert Path(passed["trt_engine_cache_path"]).is_dir()  # onnxruntime creates no parents


def test_tensorrt_cache_defaults_to_the_users_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere/cache")
    assert default_tensorrt_cache_dir() == Path("/somewhere/cache/resnext-deploy/trt")
    engine = resolve_engine(tiny_resnext_onnx(), TensorRTOptions())
    passed = TensorRTOptions().to_ort(0, engine)
    assert passed["trt_timing_cache_path"] == "/somewhere/cache/resnext-deploy/trt"
    assert passed["trt_engine_cache_path"] == f"/somewhere/cache/resnext-deploy/trt/{engine.key}"
    assert "trt_profile_min_shapes" not in passed
    # without the model's engine (its key) no engine cache: a shared one serves other weights
    assert "trt_engine_cache_path" not in TensorRTOptions().to_ort(0)


def test_every_option_name_is_one_the_provider_library_knows() -> None:
    """Compared with the option names compiled into onnxruntime-gpu's provider libraries: a
    misspelt option is otherwise ignored or refused only on a GPU machine."""
    trt = TensorRTOptions(fp16=True, batch_sizes=(1, 8), cuda_graph=True)
    engine = resolve_engine(tiny_resnext_onnx(), trt)
    assert engine.profile is not None
    names = {
        "libonnxruntime_providers_cuda.so": CudaOptions(gpu_mem_limit=1).to_ort(),
        "libonnxruntime_providers_tensorrt.so": trt.to_ort(0, engine),
    }
    for library, options in names.items():
        data = (CAPI / library).read_bytes()
        for key in options:
            assert b"\0" + key.encode() + b"\0" in data, f"{key} is not an option of {library}"


def test_tensorrt_profile_batch_sizes_are_checked() -> None:
    with pytest.raises(ConfigError, match="outside"):
        TensorRTOptions(batch_sizes=(1, 8), opt_batch=16)
    with pytest.raises(ConfigError, match="positive"):
        TensorRTOptions(batch_sizes=(0, 8))


def test_cuda_graphs_are_refused_for_tensorrt() -> None:
    with pytest.raises(ConfigError, match="enable_cuda_graph"):
        SessionConfig(provider=Provider.TENSORRT, cuda=CudaOptions(enable_cuda_graph=True))


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
    assert "libcuda.so.1" in message  # the missing driver, as onnxruntime logged it


def test_strict_cuda_without_gpu_also_fails(tiny_export: Path) -> None:
    if has_cuda():
        pytest.skip("this machine has a usable GPU")
    with pytest.raises(ProviderUnavailableError):
        OrtRunner(tiny_export / ONNX_FILE, SessionConfig(provider=Provider.CUDA, strict=True))


@pytest.mark.gpu
def test_cuda_runner_matches_cpu(tiny_export: Path, cuda_or_skip: None) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64), dtype=np.float32)
    cpu = ort.InferenceSession(str(tiny_export / ONNX_FILE), providers=["CPUExecutionProvider"])
    expected = cpu.run(None, {cpu.get_inputs()[0].name: x})[0]
    config = SessionConfig(provider=Provider.CUDA, cuda=CudaOptions(use_tf32=False))
    with OrtRunner(tiny_export / ONNX_FILE, config) as cuda:
        assert cuda.session.get_providers()[0] == "CUDAExecutionProvider"
        placement = cuda.placement()
        assert placement.convs and placement.convs_on_requested == placement.convs
        np.testing.assert_allclose(cuda.infer(x), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.gpu
def test_bench_on_cuda_binds_io_on_the_device(cuda_or_skip: None) -> None:
    from resnext_deploy.bench.backends import BenchBackend
    from resnext_deploy.bench.harness import Status
    from resnext_deploy.bench.run import BenchConfig, run_benchmark
    from resnext_deploy.timing import Timing

    config = BenchConfig(
        backends=(BenchBackend.EAGER, BenchBackend.ONNXRUNTIME),
        batch_sizes=(1, 4),
        provider=Provider.CUDA,
        measure_overhead=False,
        timing=Timing(warmup=1, min_iters=3, min_time_s=0.0),
    )
    report = run_benchmark("resnext11_mini", config).report
    ort_rows = [m for m in report.results if m.backend == "onnxruntime-cuda"]
    assert ort_rows and all(m.status is Status.OK and m.end_to_end for m in ort_rows)
    described = next(b for b in report.backends if b["name"] == "onnxruntime-cuda")
    assert described["providers"][0] == "CUDAExecutionProvider"
    assert described["placement"]["ok"]
    cuda_options = described["provider_options"]["CUDAExecutionProvider"]
    assert cuda_options["cudnn_conv_algo_search"] == "EXHAUSTIVE"


# What onnxruntime-gpu 1.31.1 raised on an H200 machine run with CUDA_VISIBLE_DEVICES= (the GPU
# proof, benchmarks/results/gpu-h200-proof.json): the CUDA runtime's reason sits in the middle.
NO_DEVICE = (
    "[ONNXRuntimeError] : 1 : FAIL : provider_options_utils.h:187 Parse Failed to parse provider "
    'option "device_id": CUDA failure 100: no CUDA-capable device is detected ; GPU=-1 ; '
    "hostname=vm ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/"
    "cuda_execution_provider_info.cc ; line=70 ; expr=cudaGetDeviceCount(&num_devices); "
)


class NoDeviceSession(FakeSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import sys

        sys.stderr.write(f"\x1b[1;31m2026-12-04 [E:onnxruntime:Default, x.cc:1 F] {NO_DEVICE}\n")
        raise ort_c.Fail(NO_DEVICE)


def test_no_visible_gpu_is_said_once_in_the_cuda_runtimes_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ort, "InferenceSession", NoDeviceSession)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ProviderUnavailableError) as info:
        create_session(tiny_resnext_onnx(), SessionConfig(provider=Provider.CUDA))
    message = str(info.value)
    assert message == (
        "CUDAExecutionProvider could not start: CUDA failure 100: no CUDA-capable device is "
        "detected (CUDA_VISIBLE_DEVICES is '')"
    )


def test_onnxruntime_exception_text_is_reduced_to_its_message() -> None:
    """What onnxruntime raised on the H200 for a model newer than it reads: the status prefix and
    the source location go, the reason stays."""
    from resnext_deploy.runtime.providers import _summary

    raised = (
        "[ONNXRuntimeError] : 1 : FAIL : /onnxruntime_src/onnxruntime/core/graph/model.cc:256 "
        "onnxruntime::Model::Model(onnx::ModelProto&&, const onnxruntime::PathString&) "
        "Unsupported model IR version: 14, max supported IR version: 13"
    )
    assert _summary(raised) == "Unsupported model IR version: 14, max supported IR version: 13"


@pytest.mark.parametrize("provider", [Provider.CUDA, Provider.TENSORRT])
def test_a_model_that_does_not_load_is_blamed_on_the_file_not_the_provider(
    provider: Provider, tmp_path: Path
) -> None:
    """Random bytes named model.onnx, asked for on the GPU: the message says the file is not a
    model (onnxruntime parses it before any provider starts), not that CUDA could not start,
    and no protobuf traceback escapes TensorRT's engine key."""
    path = tmp_path / ONNX_FILE
    path.write_bytes(np.random.default_rng(0).bytes(3000))
    with pytest.raises(DeployError) as info:
        OrtRunner(path, SessionConfig(provider=provider))
    assert not isinstance(info.value, ProviderUnavailableError)
    assert str(path) in str(info.value)
    assert "protobuf parsing failed" in str(info.value).lower()
