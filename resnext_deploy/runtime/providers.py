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

import io
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ConfigError, ProviderUnavailableError
from resnext_deploy.runtime.cuda_libs import cuda_libraries, load_cuda_libraries
from resnext_deploy.runtime.placement import RECORD_ASSIGNMENT, check_placement, read_placement
from resnext_deploy.runtime.tensorrt import TensorRTEngine, first_input, resolve_engine

# TensorRT's options live in runtime/tensorrt.py; imported from here as they always were
from resnext_deploy.runtime.tensorrt import TensorRTOptions as TensorRTOptions
from resnext_deploy.runtime.tensorrt import TensorRTProfile as TensorRTProfile
from resnext_deploy.runtime.tensorrt import (
    default_tensorrt_cache_dir as default_tensorrt_cache_dir,
)


class Provider(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


ORT_NAMES = {
    Provider.CPU: "CPUExecutionProvider",
    Provider.CUDA: "CUDAExecutionProvider",
    Provider.TENSORRT: "TensorrtExecutionProvider",
}


class ConvAlgoSearch(StrEnum):
    """cuDNN convolution algorithm search (``cudnn_conv_algo_search``)."""

    EXHAUSTIVE = "EXHAUSTIVE"
    HEURISTIC = "HEURISTIC"
    DEFAULT = "DEFAULT"


CONV_ALGO_SEARCH = tuple(a.value for a in ConvAlgoSearch)


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

    def __post_init__(self) -> None:
        if self.provider is Provider.TENSORRT and self.cuda.enable_cuda_graph:
            raise ConfigError(
                "CUDA graphs (enable_cuda_graph) are an option of the CUDA provider; a TensorRT "
                "session does not use them here: switch one of the two off"
            )

    def providers(self, engine: TensorRTEngine | None = None) -> list[Any]:
        """The provider list handed to ``InferenceSession``, options included (``engine``:
        TensorRT's profile and engine cache folder for the model, see
        :func:`~resnext_deploy.runtime.tensorrt.resolve_engine`)."""
        cpu = ORT_NAMES[Provider.CPU]
        cuda = (ORT_NAMES[Provider.CUDA], self.cuda.to_ort())
        if self.provider is Provider.CPU:
            return [cpu]
        chain: list[Any] = [cuda]
        if self.provider is Provider.TENSORRT:
            options = self.tensorrt.to_ort(self.cuda.device_id, engine)
            chain.insert(0, (ORT_NAMES[Provider.TENSORRT], options))
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
        # Where each node runs (read by the placement guard, and by verify/bench/doctor).
        so.add_session_config_entry(RECORD_ASSIGNMENT, "1")
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


def create_session(
    model: str | Path | bytes,
    config: SessionConfig = SessionConfig(),
    engine: TensorRTEngine | None = None,
) -> Any:
    """Build an ``onnxruntime.InferenceSession`` on the requested provider or raise.

    On TensorRT, ``engine`` is the model's profile and engine cache folder (resolved here from
    the model when not given: :func:`~resnext_deploy.runtime.tensorrt.resolve_engine`).

    onnxruntime's fallback is off, so a provider failure at creation or in ``run()`` is raised,
    never retried elsewhere. Nothing onnxruntime prints during creation reaches stdout.
    Raises :class:`ProviderUnavailableError` when the provider cannot start, when it is not the
    one the session uses, or when the model's convolutions were placed on another provider,
    with the reason onnxruntime gave (missing driver or libraries, unsupported nodes).
    """
    import onnxruntime as ort

    _require_built_in(ort, config.provider)
    missing = _preload_cuda_libraries(ort, config.provider)
    opened = _open_session(ort, model, config, _session_engine(model, config, engine), missing)
    opened.session.disable_fallback()  # enable_fallback=0 already did; say it where run() looks
    _check_provider_used(opened, config.provider, missing)
    return opened.session


@dataclass(frozen=True)
class _OpenedSession:
    """A session onnxruntime created, with what it logged meanwhile (the reason given when the
    session turns out to run elsewhere)."""

    session: Any
    log: str


def _require_built_in(ort: Any, provider: Provider) -> None:
    wanted = ORT_NAMES[provider]
    if wanted not in ort.get_available_providers():
        raise ProviderUnavailableError(
            f"{wanted} is not built into this onnxruntime ({ort.__version__}); install "
            "onnxruntime-gpu (and only it: it conflicts with the onnxruntime package)"
        )


def _session_engine(
    model: str | Path | bytes, config: SessionConfig, engine: TensorRTEngine | None
) -> TensorRTEngine | None:
    """TensorRT's profile and cache folders for ``model`` (created here), None on the other
    providers."""
    if config.provider is not Provider.TENSORRT:
        return None
    engine = engine or resolve_engine(model, config.tensorrt)
    _make_cache_dirs(config.tensorrt, engine)
    return engine


def _open_session(
    ort: Any,
    model: str | Path | bytes,
    config: SessionConfig,
    engine: TensorRTEngine | None,
    missing: str,
) -> _OpenedSession:
    """The ``InferenceSession`` with onnxruntime's output captured; a provider that fails to
    start raises :class:`ProviderUnavailableError` with onnxruntime's reason. A model that does
    not load (and any failure on the CPU provider) raises onnxruntime's own error as it is: the
    file is at fault, not the provider."""
    wanted = ORT_NAMES[config.provider]
    source = model if isinstance(model, bytes) else str(model)
    failure: str | None = None
    with capture_native_output() as log:
        try:
            session = ort.InferenceSession(
                source,
                sess_options=config.session_options(),
                providers=config.providers(engine),
                enable_fallback=0,
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidArgument types
            if config.provider is Provider.CPU or _is_model_failure(ort, exc):
                raise
            failure = _summary(str(exc))
    if failure is not None:
        reason = _reason(log.text())
        said = "" if reason.endswith(failure) else reason  # said once is enough
        raise ProviderUnavailableError(
            f"{wanted} could not start: {failure.rstrip('.')}{said}{missing}"
            f"{_visible_devices_hint()}"
        )
    return _OpenedSession(session, log.text())


def _is_model_failure(ort: Any, exc: Exception) -> bool:
    """True when onnxruntime failed on the model file before any provider started: unreadable,
    not a protobuf, an invalid graph ("Load model from ... failed")."""
    state = ort.capi.onnxruntime_pybind11_state
    names = ("NoSuchFile", "NoModel", "InvalidProtobuf", "InvalidGraph")
    kinds = tuple(getattr(state, name) for name in names)
    return isinstance(exc, kinds) or "Load model from" in str(exc)


def _check_provider_used(opened: _OpenedSession, provider: Provider, missing: str) -> None:
    """The two guards: the session's first provider is the one asked for, and (off the CPU)
    its convolutions were placed there."""
    wanted = ORT_NAMES[provider]
    active = opened.session.get_providers()
    if active[0] != wanted:
        raise ProviderUnavailableError(
            f"{wanted} was requested but onnxruntime would run on {active[0]} "
            f"(no usable GPU?){_reason(opened.log)}{missing}. resnext-deploy never falls back "
            "silently: ask for the CPU provider to run on the CPU."
        )
    if provider is not Provider.CPU:
        check_placement(read_placement(opened.session, wanted))


def check_provider(provider: Provider, config: SessionConfig | None = None) -> None:
    """Raise :class:`ProviderUnavailableError` unless ``provider`` really starts here with the
    options of ``config`` (strictness, CUDA and TensorRT options kept), using a one-convolution
    model: cheap, so run it before any expensive work."""
    if provider is Provider.CPU:
        return
    create_session(probe_model(), replace(config or SessionConfig(), provider=provider))


def probe_model() -> bytes:
    """A fixed-shape 1x1 Conv + Relu: small, and a Conv, so the placement guard has a conv to
    check and the provider has to bring up its convolution library."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((1, 1, 1, 1), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    return model.SerializeToString()


def model_input(model: str | Path | bytes) -> tuple[str, tuple[int | str, ...]]:
    """Name and dimensions (ints, or the names of symbolic ones) of the model's first input,
    read without loading external weights."""
    import onnx

    proto = (
        onnx.load_model_from_string(model)
        if isinstance(model, bytes)
        else onnx.load_model(str(model), load_external_data=False)
    )
    return first_input(proto)


def _make_cache_dirs(options: TensorRTOptions, engine: TensorRTEngine) -> None:
    """onnxruntime does not create missing parents of its cache folders."""
    folders = [engine.cache_dir] if options.engine_cache else []
    folders += [options.resolved_cache_dir()] if options.timing_cache else []
    for path in folders:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the TensorRT cache folder {path}: {exc}") from None


def _preload_cuda_libraries(ort: Any, provider: Provider) -> str:
    """Load CUDA's libraries (TensorRT's too for that provider) from wherever the user has them
    (:mod:`resnext_deploy.runtime.cuda_libs`; onnxruntime's own ``preload_dlls`` looks only
    beside its package). Returns ``""``, or a sentence naming the required ones not found, for
    the error raised if the provider then cannot start."""
    cuda = str(getattr(ort, "cuda_version", "") or "")
    if provider is Provider.CPU or not cuda:
        return ""
    wanted = cuda_libraries(cuda, tensorrt=provider is Provider.TENSORRT)
    return load_cuda_libraries(wanted).missing_text()


class _CapturedText:
    def __init__(self) -> None:
        self._text = ""

    def text(self) -> str:
        return self._text


@contextmanager
def capture_native_output() -> Iterator[_CapturedText]:
    """Capture what native code (onnxruntime's C++ logger) and Python ``print`` write to file
    descriptors 1 and 2; the text is available once the block has ended."""
    captured = _CapturedText()
    printed = io.StringIO()  # sys.stdout need not be file descriptor 1 (pytest, notebooks)
    with tempfile.TemporaryFile(mode="w+b") as tmp, redirect_stdout(printed):
        for stream in (sys.__stdout__, sys.stderr):
            if stream is not None:
                stream.flush()
        saved = {fd: os.dup(fd) for fd in (1, 2)}
        for fd in saved:
            os.dup2(tmp.fileno(), fd)
        try:
            yield captured
        finally:
            for stream in (sys.__stdout__, sys.stderr):
                if stream is not None:
                    stream.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            captured._text = tmp.read().decode("utf-8", "replace") + printed.getvalue()


capture_native_stderr = capture_native_output  # the name it had when it captured fd 2 only


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _reason(log: str) -> str:
    """The first error onnxruntime logged, reduced to its cause (e.g. the missing library)."""
    lines = [ANSI_ESCAPE.sub("", ln) for ln in log.splitlines()]
    errors = [ln for ln in lines if "error" in ln.lower() or "fail" in ln.lower()]
    return f"; onnxruntime said: {_summary(errors[0])}" if errors else ""


# "/onnxruntime_src/.../file.cc:729 void onnxruntime::Fn(Args&) <the message>"
SOURCE_PREFIX = re.compile(r"^\S+\.(?:cc|h|cpp):\d+ .*?\)\s+")
# what precedes the message in onnxruntime's exceptions: "[ONNXRuntimeError] : 1 : FAIL : "
STATUS_PREFIX = re.compile(r"^\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
# "provider_options_utils.h:187 Parse Failed ..." (a source location without a signature)
FILE_LINE = re.compile(r"^\S+\.(?:cc|h|cpp):\d+\s+")
# "CUDA failure 100: no CUDA-capable device is detected ; GPU=-1 ; hostname=vm ; file=..."
CUDA_FAILURE = re.compile(r"(CUDA failure \d+: [^;]*[^;\s])")


def _visible_devices_hint() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return ""
    return f" (CUDA_VISIBLE_DEVICES is {visible!r})"


def _summary(text: str) -> str:
    # Log lines look like "2026-... [E:onnxruntime:Default, file.cc:123 Fn] ... with error: why".
    line = ANSI_ESCAPE.sub("", text).strip().splitlines()[0] if text.strip() else text
    cuda = CUDA_FAILURE.search(line)
    if cuda:  # the CUDA runtime's own words, without onnxruntime's file/line/expression tail
        return cuda.group(1)
    if "with error: " in line:
        return line.rsplit("with error: ", 1)[1][:300]
    if "] " in line:
        line = line.rsplit("] ", 1)[1]
    line = STATUS_PREFIX.sub("", line)  # ": 1 : FAIL : " left of "[ONNXRuntimeError]"
    line = FILE_LINE.sub("", SOURCE_PREFIX.sub("", line))
    return line[:300]
