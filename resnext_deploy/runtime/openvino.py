"""OpenVINO: the export's ONNX files run on OpenVINO's CPU plugin (numpy + openvino, no torch).

A deployment engine beside onnxruntime (:mod:`resnext_deploy.runtime.engines`), for the same
files: the ONNX frontend reads them (named explicitly, so no other frontend guesses at a file),
the model is compiled once for the **CPU device named explicitly** (never ``AUTO``, which could
move work elsewhere), with a dynamic batch axis, so one compiled model serves every batch size.

``precision``: ``f32`` asks for ``INFERENCE_PRECISION_HINT=f32``, the only setting that runs an fp32
file as fp32 everywhere (OpenVINO otherwise picks bf16 on CPUs with avx512_bf16, slower and less
accurate); ``default`` leaves OpenVINO its own choice (a benchmark peer). A QDQ int8 file runs its
quantized layers in int8 either way: :meth:`OpenVinoRunner.layer_precisions` reads which ones from
the compiled runtime model.
"""

from __future__ import annotations

import functools
import io
import re
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from resnext_deploy.errors import ArtifactError, ConfigError, DeployError
from resnext_deploy.runtime.base import BoundCall, Runner, TensorInfo, spec_from_metadata
from resnext_deploy.spec import SPEC_KEY, ModelSpec
from resnext_deploy.validate import check_int

DEVICE = "CPU"
INSTALL_HINT = "pip install 'resnext-deploy[openvino]'"
MAX_THREADS = 1024
# OpenVINO's element types as onnxruntime names them (the names every consumer compares with)
_TYPES = {
    "f32": ("tensor(float)", np.float32),
    "f16": ("tensor(float16)", np.float16),
    "u8": ("tensor(uint8)", np.uint8),
    "i8": ("tensor(int8)", np.int8),
    "i32": ("tensor(int32)", np.int32),
    "i64": ("tensor(int64)", np.int64),
}
_INT8 = {"u8", "i8"}
# the layer types that carry the multiply-accumulates (convolutions and the classifier)
_COMPUTE_LAYERS = {"Convolution", "FullyConnected", "MatMul", "Deconvolution"}


class OpenVinoPrecision(StrEnum):
    F32 = "f32"
    DEFAULT = "default"


class PerformanceHint(StrEnum):
    """OpenVINO's own hint: ``LATENCY`` runs one request on every core (what one caller at a
    time wants), ``THROUGHPUT`` splits the cores into streams for parallel requests."""

    LATENCY = "LATENCY"
    THROUGHPUT = "THROUGHPUT"


@dataclass(frozen=True, kw_only=True)
class OpenVinoConfig:
    """How to compile a model on OpenVINO's CPU plugin. ``threads``: ``INFERENCE_NUM_THREADS``
    (``None``: OpenVINO's default, every core)."""

    precision: OpenVinoPrecision = OpenVinoPrecision.F32
    hint: PerformanceHint = PerformanceHint.LATENCY
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.threads is not None:
            check_int(self.threads, "OpenVINO threads", 1, MAX_THREADS)

    def properties(self) -> dict[str, Any]:
        """The compile properties handed to ``compile_model``."""
        props: dict[str, Any] = {"PERFORMANCE_HINT": self.hint.value}
        if self.threads is not None:
            props["INFERENCE_NUM_THREADS"] = self.threads
        if self.precision is OpenVinoPrecision.F32:
            props["INFERENCE_PRECISION_HINT"] = "f32"
        return props


@dataclass(frozen=True)
class LayerPrecisions:
    """What OpenVINO's compiled model executes, per compute layer (convolutions and the fully
    connected classifier): ``int8`` and ``other`` hold layer names; ``by_type`` counts
    ``(layer type, runtime precision)``."""

    int8: tuple[str, ...]
    other: tuple[str, ...]
    by_type: dict[str, int]

    @property
    def int8_convs(self) -> int:
        return sum(n for k, n in self.by_type.items() if k.startswith("Convolution ") and _is8(k))

    @property
    def other_convs(self) -> int:
        return sum(
            n for k, n in self.by_type.items() if k.startswith("Convolution ") and not _is8(k)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "int8_convs": self.int8_convs,
            "other_convs": self.other_convs,
            "by_type": dict(self.by_type),
            "int8_layers": list(self.int8),
            "other_layers": list(self.other),
        }


def _is8(key: str) -> bool:
    return key.rsplit(" ", 1)[-1] in _INT8


def openvino_installed() -> bool:
    """Whether the optional ``openvino`` package is importable (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def openvino_module() -> Any:
    """The ``openvino`` package, or :class:`ConfigError` naming the extra that installs it."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(
            f"the OpenVINO engine needs the optional package openvino: {INSTALL_HINT}"
        ) from None
    return openvino


@functools.cache
def shared_core() -> Any:
    """One ``openvino.Core`` for the process, as OpenVINO advises. Each Core loads its own CPU
    plugin, and each plugin swaps the thread's alternate signal stack on creation and swaps it
    back when destroyed: two Cores destroyed out of order leave the main thread's alternate
    stack on freed memory, and the next SIGINT (Ctrl-C) then kills the process with SIGSEGV
    instead of raising KeyboardInterrupt."""
    return openvino_module().Core()


def openvino_version() -> str:
    return str(openvino_module().__version__).split("-", 1)[0]


class OpenVinoRunner(Runner):
    """Runs an ONNX file (or its bytes) on OpenVINO's CPU plugin. Raises :class:`ConfigError`
    when OpenVINO is not installed and :class:`ArtifactError` naming the file when OpenVINO
    cannot read or compile it."""

    device = "cpu"

    def __init__(
        self,
        model: str | Path | bytes,
        config: OpenVinoConfig | None = None,
        name: str | None = None,
    ) -> None:
        ov = openvino_module()
        self.config = config or OpenVinoConfig()
        self.source = "an in-memory ONNX model" if isinstance(model, bytes) else str(model)
        self.name = name or (
            "openvino-cpu"
            if self.config.precision is OpenVinoPrecision.F32
            else f"openvino-cpu[{self.config.precision.value}]"
        )
        try:
            self.model: Any = _read_onnx(ov, model)
            self.compiled: Any = shared_core().compile_model(
                self.model, DEVICE, self.config.properties()
            )
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own types
            raise_openvino_error(exc, f"{self.source} cannot be loaded by {self.engine_name()}")
        self.inputs = tuple(_info(p) for p in self.compiled.inputs)
        self.outputs = tuple(_info(p) for p in self.compiled.outputs)
        if len(self.inputs) != 1 or not self.outputs:
            raise ArtifactError(
                f"{self.source} has {len(self.inputs)} inputs and {len(self.outputs)} outputs; "
                "a classifier has one input and at least one output"
            )
        self.input_name = self.inputs[0].name
        self.input_type = self.inputs[0].type
        self._dtype = _TYPES.get(self.compiled.inputs[0].get_element_type().get_type_name())
        self._request: Any = self.compiled.create_infer_request()

    @staticmethod
    def engine_name() -> str:
        return f"OpenVINO {openvino_version()}"

    def run_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for ``batch``, in the model's order (copies: the next run overwrites
        the request's buffers)."""
        self._check_input(batch)
        try:
            self._request.infer({0: np.ascontiguousarray(batch)})
        except Exception as exc:  # noqa: BLE001
            raise_openvino_error(
                exc,
                f"{self.engine_name()} could not run {self.source} on input shape "
                f"{tuple(batch.shape)}",
            )
        return [np.array(self._request.get_output_tensor(i).data) for i in range(len(self.outputs))]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.run_outputs(batch)[0]

    def bind(self, batch: np.ndarray) -> BoundCall:
        """A request of its own holding ``batch`` as its input tensor: the timed call is
        ``infer()`` alone (OpenVINO's synchronous call, on the caller's thread)."""
        self._check_input(batch)
        host = np.array(batch, order="C", copy=True)
        request = self.compiled.create_infer_request()
        request.set_input_tensor(openvino_module().Tensor(host))
        return BoundCall(
            lambda: request.infer(), lambda: np.array(request.get_output_tensor(0).data)
        )

    def _check_input(self, batch: np.ndarray) -> None:
        """OpenVINO converts a wrong element type silently (floats into a uint8 input): refuse
        it, as onnxruntime does."""
        if self._dtype is not None and batch.dtype != self._dtype[1]:
            raise ConfigError(
                f"{self.source} takes {self.input_type} input, not {batch.dtype} "
                "(the graph with the preprocessing inside takes uint8 NHWC images)"
            )
        expected = self.inputs[0].shape
        if batch.ndim != len(expected) or any(
            d not in (-1, b) for d, b in zip(expected, batch.shape, strict=True)
        ):
            raise ConfigError(
                f"{self.source} takes input of shape {expected} (-1: any), not {batch.shape}"
            )

    def embedded_spec(self, expected: ModelSpec | None = None) -> ModelSpec:
        """The spec the export wrote into the file's metadata (OpenVINO's ONNX frontend keeps
        it under the model's ``framework`` runtime info), checked as
        :meth:`~resnext_deploy.runtime.ort.OrtRunner.embedded_spec` checks it."""
        path = ["framework", SPEC_KEY]
        raw = self.model.get_rt_info(path).astype(str) if self.model.has_rt_info(path) else None
        return spec_from_metadata(raw, self.source, expected)

    def layer_precisions(self) -> LayerPrecisions:
        """Which compute layers the compiled model executes in int8 (``runtimePrecision`` of
        its runtime model: ``u8``/``i8``) and which in another precision."""
        int8: list[str] = []
        other: list[str] = []
        counts: Counter[str] = Counter()
        for op in self.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            kind, precision = info["layerType"].astype(str), info["runtimePrecision"].astype(str)
            if kind not in _COMPUTE_LAYERS:
                continue
            counts[f"{kind} {precision}"] += 1
            (int8 if precision in _INT8 else other).append(op.get_friendly_name())
        return LayerPrecisions(tuple(int8), tuple(other), dict(sorted(counts.items())))

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "device": "cpu",
            "engine": self.engine_name(),
            "openvino_device": DEVICE,
            "config": self.config.properties(),
        }
        if self.compiled is not None:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
            info["inference_precision"] = hint.get_type_name()
            info["inference_threads"] = int(self.compiled.get_property("INFERENCE_NUM_THREADS"))
            info["layers"] = self.layer_precisions().to_dict()
        return info

    def close(self) -> None:
        self._request = None
        self.compiled = None
        self.model = None


def _read_onnx(ov: Any, model: str | Path | bytes) -> Any:
    """The ONNX frontend, named: ``Core.read_model`` would try every frontend on a file that is
    not ONNX (TensorFlow's prints its parse errors on stderr)."""
    frontend = ov.frontend.FrontEndManager().load_by_framework("onnx")
    source: Any = io.BytesIO(model) if isinstance(model, bytes) else str(model)
    return frontend.convert(frontend.load(source))


def _info(port: Any) -> TensorInfo:
    kind = port.get_element_type().get_type_name()
    shape = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
    return TensorInfo(port.get_any_name(), _TYPES.get(kind, (f"tensor({kind})",))[0], shape)


def raise_openvino_error(exc: Exception, what: str) -> NoReturn:
    """``exc`` as :class:`ArtifactError` ``what: <OpenVINO's cause>`` when it is OpenVINO's
    (a ``RuntimeError`` or one of its frontend's types); our own errors and bugs as they are."""
    if isinstance(exc, DeployError) or not _is_openvino_error(exc):
        raise exc
    raise ArtifactError(f"{what}: {openvino_cause(exc)}") from None


def _is_openvino_error(exc: Exception) -> bool:
    return isinstance(exc, (RuntimeError, MemoryError)) or type(exc).__module__.startswith(
        "openvino"
    )


# "Exception from src/.../core.cpp:105:" and "Check '...' failed at src/...:563:" lines
_LOCATION = re.compile(r"^(Exception from \S+:\d+:|Check '.*' failed at \S+:\d+:)\s*$")
_API = re.compile(r"^FrontEnd API failed with \w+:\s*$")


def openvino_cause(exc: BaseException) -> str:
    """OpenVINO's message without its source locations: the lines that say what went wrong."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [ln for ln in lines if ln and not _LOCATION.match(ln) and not _API.match(ln)]
    return " ".join(kept)[:500] or type(exc).__name__
