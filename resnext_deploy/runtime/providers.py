"""onnxruntime sessions with a provider guard: asking for CUDA never ends in a silent CPU run.

onnxruntime-gpu lists the CUDA provider as available on machines without a GPU, and a session
asked for CUDA logs the failure through its own C++ logger and quietly runs on the CPU.
``session.get_providers()`` after creation is the first check :func:`create_session` makes; the
second is where the nodes really went (:mod:`resnext_deploy.runtime.placement`): every Conv on
the provider asked for. Either failing raises :class:`ProviderUnavailableError` with what
onnxruntime logged.

onnxruntime's own fallback is switched off (``enable_fallback=0``, honoured by 1.31.1): with it
on, ``InferenceSession`` retries a provider that fails at creation on other providers and prints
"EP Error" to stdout, and ``run()`` silently rebuilds the session on TensorRT -> CUDA -> CPU when
a provider fails mid-run, after the guard has passed. Off, a failure is an error with
onnxruntime's own reason.

This module imports numpy and onnxruntime only (no torch), so it serves the embedding path.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ConfigError, ProviderUnavailableError
from resnext_deploy.runtime.placement import RECORD_ASSIGNMENT, check_placement, read_placement


class Provider(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


ORT_NAMES = {
    Provider.CPU: "CPUExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.TENSORRT: "TensorrtExecutionProvider",
}
CONV_ALGO_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")


@dataclass(frozen=True, kw_only=True)
class CudaOptions:
    """CUDA execution-provider options that matter for conv nets (names as onnxruntime's docs)."""

    device_id: int = 0
    cudnn_conv_algo_search: str = "EXHAUSTIVE"
    cudnn_conv_use_max_workspace: bool = True
    prefer_nhwc: bool = False
    use_tf32: bool = True
    enable_cuda_graph: bool = False
    gpu_mem_limit: int | None = None

    def __post_init__(self) -> None:
        if self.cudnn_conv_algo_search not in CONV_ALGO_SEARCH:
            raise ConfigError(
                f"cudnn_conv_algo_search must be one of {', '.join(CONV_ALGO_SEARCH)}, "
                f"not {self.cudnn_conv_algo_search!r}"
            )

    def to_ort(self) -> dict[str, str]:
        """Provider options as onnxruntime takes them (all values strings)."""
        opts = {
            "device_id": str(self.device_id),
            "cudnn_conv_algo_search": self.cudnn_conv_algo_search,
            "cudnn_conv_use_max_workspace": str(int(self.cudnn_conv_use_max_workspace)),
            "prefer_nhwc": str(int(self.prefer_nhwc)),
            "use_tf32": str(int(self.use_tf32)),
            "enable_cuda_graph": str(int(self.enable_cuda_graph)),
        }
        if self.gpu_mem_limit is not None:
            opts["gpu_mem_limit"] = str(self.gpu_mem_limit)
        return opts


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    fp16: bool = False
    engine_cache_dir: str | None = None

    def to_ort(self, device_id: int) -> dict[str, str]:
        opts = {"device_id": str(device_id), "trt_fp16_enable": str(int(self.fp16))}
        if self.engine_cache_dir:
            opts |= {
                "trt_engine_cache_enable": "1",
                "trt_engine_cache_path": self.engine_cache_dir,
                "trt_timing_cache_enable": "1",
            }
        return opts


@dataclass(frozen=True, kw_only=True)
class SessionConfig:
    """How to build an onnxruntime session.

    ``strict`` sets ``session.disable_cpu_ep_fallback`` and leaves the CPU provider out of the
    list, so onnxruntime itself refuses to place any node on the CPU. It can refuse a healthy
    model whose small shape nodes onnxruntime prefers on the CPU; the post-creation provider
    check (always on) is the guard that is safe everywhere.
    """

    provider: Provider = Provider.CPU
    cuda: CudaOptions = field(default_factory=CudaOptions)
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    strict: bool = False
    intra_op_threads: int | None = None
    inter_op_threads: int | None = None
    optimization_level: str = "all"

    def providers(self) -> list[Any]:
        """The provider list handed to ``InferenceSession``, options included."""
        cpu = ORT_NAMES[Provider.CPU]
        cuda = (ORT_NAMES[Provider.CUDA], self.cuda.to_ort())
        if self.provider is Provider.CPU:
            return [cpu]
        chain: list[Any] = [cuda]
        if self.provider is Provider.TENSORRT:
            trt = (ORT_NAMES[Provider.TENSORRT], self.tensorrt.to_ort(self.cuda.device_id))
            chain.insert(0, trt)
        return chain if self.strict else [*chain, cpu]

    def threads(self) -> int:
        """Intra-op threads: as configured, else the cores this process may run on."""
        return self.intra_op_threads or available_cores()

    def session_options(self) -> Any:
        import onnxruntime as ort

        levels = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        if self.optimization_level not in levels:
            raise ConfigError(f"optimization level must be one of {', '.join(levels)}")
        so = ort.SessionOptions()
        so.graph_optimization_level = levels[self.optimization_level]
        so.intra_op_num_threads = self.threads()
        if self.inter_op_threads:
            so.inter_op_num_threads = self.inter_op_threads
        if self.strict and self.provider is not Provider.CPU:
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def create_session(model: str | Path | bytes, config: SessionConfig = SessionConfig()) -> Any:
    """Build an ``onnxruntime.InferenceSession`` on the requested provider or raise.

    Raises :class:`ProviderUnavailableError` when the requested accelerator is not the one the
    session actually uses, with the reason onnxruntime logged (missing driver or libraries).
    """
    import onnxruntime as ort

    wanted = ORT_NAMES[config.provider]
    if wanted not in ort.get_available_providers():
        raise ProviderUnavailableError(
            f"{wanted} is not built into this onnxruntime ({ort.__version__}); install "
            "onnxruntime-gpu (and only it: it conflicts with the onnxruntime package)"
        )
    if config.provider is not Provider.CPU:
        _preload_cuda_libraries(ort)
    source = model if isinstance(model, bytes) else str(model)
    with capture_native_stderr() as log:
        try:
            session = ort.InferenceSession(
                source, sess_options=config.session_options(), providers=config.providers()
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            if config.provider is Provider.CPU:
                raise
            raise ProviderUnavailableError(
                f"{wanted} could not start: {_summary(str(exc))}{_reason(log.text())}"
            ) from None
    active = session.get_providers()
    if active[0] != wanted:
        raise ProviderUnavailableError(
            f"{wanted} was requested but onnxruntime would run on {active[0]} "
            f"(no usable GPU?){_reason(log.text())}. resnext-deploy never falls back silently: "
            "use --provider cpu to run on the CPU."
        )
    return session


def check_provider(provider: Provider, config: SessionConfig | None = None) -> None:
    """Raise :class:`ProviderUnavailableError` unless ``provider`` really starts here, using a
    one-node model (cheap: run it before any expensive work)."""
    if provider is Provider.CPU:
        return
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    base = config or SessionConfig()
    create_session(
        probe.SerializeToString(),
        SessionConfig(provider=provider, cuda=base.cuda, tensorrt=base.tensorrt),
    )


def _preload_cuda_libraries(ort: Any) -> None:
    """Make CUDA/cuDNN from the nvidia-* wheels (or torch's bundle) visible to onnxruntime."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with capture_native_stderr():
        try:
            preload()
        except Exception:  # noqa: BLE001 - a failed preload is reported by the provider check
            pass


class _CapturedText:
    def __init__(self) -> None:
        self._text = ""

    def text(self) -> str:
        return self._text


@contextmanager
def capture_native_stderr() -> Iterator[_CapturedText]:
    """Capture what native code (onnxruntime's C++ logger) writes to file descriptor 2."""
    captured = _CapturedText()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured._text = tmp.read().decode("utf-8", "replace")


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _reason(log: str) -> str:
    """The first error onnxruntime logged, reduced to its cause (e.g. the missing library)."""
    lines = [ANSI_ESCAPE.sub("", ln) for ln in log.splitlines()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
    return f"; onnxruntime said: {_summary(errors[0])}" if errors else ""


def _summary(text: str) -> str:
    # Log lines look like "2026-... [E:onnxruntime:Default, file.cc:123 Fn] ... with error: why".
    line = ANSI_ESCAPE.sub("", text).strip().splitlines()[0] if text.strip() else text
    if "with error: " in line:
        return line.rsplit("with error: ", 1)[1][:300]
    if "] " in line:
        line = line.rsplit("] ", 1)[1]
    return line[:300]
