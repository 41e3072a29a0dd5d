"""onnxruntime runner (numpy + onnxruntime only, no torch).

``infer`` is a plain ``session.run``. For timing, :meth:`OrtRunner.bind` uses IO binding: the
input lives in an ``OrtValue`` on the session's device, every output is pre-allocated there, and
the timed call is ``run_with_iobinding`` alone. :meth:`OrtRunner.bind_end_to_end` uses the *same*
binding and adds the host->device copy (``update_inplace``) and the device->host copy of the
outputs (``copy_outputs_to_cpu``). The same calls run on the CPU provider (device ``cpu``), so
they are tested without a GPU.

CUDA graphs (``CudaOptions.enable_cuda_graph``): a captured graph replays the buffer addresses it
was captured with, so an input may only change by being updated in place, and ``run()`` with numpy
inputs must not be used on such a session. Every batch shape therefore gets one binding with fixed
input and output buffers, kept for the runner's life, and its own graph in the one session
(onnxruntime's ``gpu_graph_id`` run option, one id per shape, counted from 1; 0 is the id a run
without the option gets, and -1 disables capture: ``onnxruntime_run_options_config_keys.h``).
TensorRT's own CUDA graph (``TensorRTOptions.cuda_graph``) is fed the same way, but its provider
keeps one graph per session whatever the id: such a runner refuses a second input shape.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from resnext_deploy.errors import ArtifactError, ConfigError, DeployError
from resnext_deploy.runtime.base import BoundCall, Runner, TensorInfo, spec_from_metadata
from resnext_deploy.runtime.device_memory import DeviceMemory, process_device_memory
from resnext_deploy.runtime.placement import Placement, read_placement
from resnext_deploy.runtime.providers import ORT_NAMES, Provider, SessionConfig, create_session
from resnext_deploy.runtime.tensorrt import TensorRTEngine, TensorRTProfile, resolve_engine
from resnext_deploy.spec import SPEC_KEY, ModelSpec

GPU_GRAPH_ID = "gpu_graph_id"


@dataclass(frozen=True, kw_only=True)
class SessionBuild:
    """How long building the session took. With TensorRT and a profile this is the engine
    build (or its load from the cache), which otherwise lands in the first timed call.
    ``new_cache_files``: files the build added to the TensorRT cache folder (none: the engine
    came from the cache)."""

    seconds: float
    cache_dir: str | None = None
    new_cache_files: tuple[str, ...] = ()

    @property
    def from_cache(self) -> bool | None:
        """Whether TensorRT loaded its engine from the cache (``None`` without a cache)."""
        if self.cache_dir is None:
            return None
        return not any(f.endswith(".engine") for f in self.new_cache_files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds": self.seconds,
            "cache_dir": self.cache_dir,
            "new_cache_files": list(self.new_cache_files),
            "from_cache": self.from_cache,
        }


@dataclass
class _ShapeBinding:
    """One input shape's fixed device buffers, its binding and run options. ``owner`` is the
    bound call whose batch the input buffer holds now (several calls may share one shape)."""

    binding: Any
    inputs: Any  # OrtValue of the input
    options: Any  # RunOptions (with the shape's gpu_graph_id on a CUDA-graph session)
    owner: object | None = None

    def load(self, host: np.ndarray, owner: object | None) -> None:
        """Copy ``host`` into the input buffer in place (its address never changes)."""
        self.inputs.update_inplace(host)
        self.binding.synchronize_inputs()
        self.owner = owner


class OrtRunner(Runner):
    """Runs an ONNX file on the provider in ``config``; the guard in :func:`create_session`
    guarantees that provider is the one in use and that it took the model's convolutions."""

    def __init__(
        self,
        model: str | Path | bytes,
        config: SessionConfig | None = None,
        name: str | None = None,
    ) -> None:
        self.config = config or SessionConfig()
        # resolved once (the model's sha256 keys the engine cache): listed before and after
        self.engine: TensorRTEngine | None = (
            resolve_engine(model, self.config.tensorrt)
            if self.config.provider is Provider.TENSORRT
            else None
        )
        self.source = "an in-memory ONNX model" if isinstance(model, bytes) else str(model)
        cache = self._trt_cache_dir()
        before = _listing(cache)
        start = time.perf_counter()
        try:
            self.session: Any = create_session(model, self.config, self.engine)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's types share no base class
            raise_onnxruntime_error(exc, f"{self.source} cannot be loaded by {_onnxruntime()}")
        seconds = time.perf_counter() - start
        self.build = SessionBuild(
            seconds=seconds,
            cache_dir=str(cache) if cache else None,
            new_cache_files=tuple(sorted(_listing(cache) - before)),
        )
        self._placement = read_placement(self.session, ORT_NAMES[self.config.provider])
        inputs, self._outputs = self.session.get_inputs(), self.session.get_outputs()
        if not inputs or not self._outputs:
            raise ArtifactError(f"{self.source} has no inputs or no outputs: not a model to run")
        self.input_name = inputs[0].name
        self.input_type = inputs[0].type
        self.inputs = tuple(_tensor_info(m) for m in inputs)
        self.outputs = tuple(_tensor_info(m) for m in self._outputs)
        self.output_name = self._outputs[0].name
        self.num_outputs = len(self._outputs)
        self.device = self.memory_device
        self.name = name or f"onnxruntime-{self.config.provider.value}"
        self._bound: dict[tuple[int, ...], _ShapeBinding] = {}
        self._last: _ShapeBinding | None = None
        self._run_options = _quiet_run_options()

    @property
    def memory_device(self) -> str:
        """Where onnxruntime keeps this session's inputs and outputs (``OrtValue`` device)."""
        return "cpu" if self.config.provider is Provider.CPU else "cuda"

    @property
    def device_id(self) -> int:
        return self.config.cuda.device_id if self.memory_device == "cuda" else 0

    @property
    def uses_cuda_graph(self) -> bool:
        if self.config.provider is Provider.TENSORRT:
            return self.config.tensorrt.cuda_graph
        return self.config.provider is Provider.CUDA and self.config.cuda.enable_cuda_graph

    def shape_profile(self) -> TensorRTProfile | None:
        """The optimization profile TensorRT built this session's engine for (``None``: not
        TensorRT, a fixed-shape input, or no batch sizes given)."""
        return self.engine.profile if self.engine is not None else None

    def placement(self) -> Placement:
        """Where onnxruntime placed each node (counts per provider, ops that ran elsewhere)."""
        return self._placement

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if self.uses_cuda_graph:
            # A CUDA-graph session only replays what it captured: feed it through its binding.
            shaped = self._binding(batch, owner=None)
            self._run(shaped)
            return shaped.binding.copy_outputs_to_cpu()[0]
        try:
            feeds = {self.input_name: batch}
            return self.session.run([self.output_name], feeds, self._run_options)[0]
        except Exception as exc:  # noqa: BLE001 - onnxruntime's types share no base class
            raise_onnxruntime_error(exc, self._run_failed(batch.shape))

    def _binding(self, batch: np.ndarray, owner: object | None) -> _ShapeBinding:
        """The binding for ``batch``'s shape (created on first use) holding ``batch``."""
        key = tuple(batch.shape)
        shaped = self._bound.get(key)
        if shaped is None:
            if self._bound and self.uses_cuda_graph and self.config.provider is Provider.TENSORRT:
                raise ConfigError(
                    f"{self.name}: TensorRT's CUDA graph holds one input shape per session, "
                    f"captured for {next(iter(self._bound))}; use one runner per batch size "
                    "(TensorRTOptions.for_batch)"
                )
            if not self.uses_cuda_graph:
                # Without graphs nothing pins old buffers: keep one shape's worth of memory.
                self._bound.clear()
            shaped = self._new_binding(batch, graph_id=len(self._bound) + 1)
            self._bound[key] = shaped
            shaped.owner = owner
        else:
            shaped.load(np.ascontiguousarray(batch), owner)
        self._last = shaped
        return shaped

    def _new_binding(self, batch: np.ndarray, graph_id: int) -> _ShapeBinding:
        import onnxruntime as ort

        # On the CPU an OrtValue wraps the numpy buffer it is given: give it a private copy, so
        # that neither the caller reusing its array nor update_inplace touch the other's data.
        x = ort.OrtValue.ortvalue_from_numpy(
            np.array(batch, copy=True), self.memory_device, self.device_id
        )
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.input_name, x)
        for meta in self._outputs:
            shape = [batch.shape[0], *meta.shape[1:]]
            if not all(isinstance(d, int) for d in shape):
                raise ConfigError(
                    f"{self.name}: output {meta.name!r} has shape {meta.shape}; only the batch "
                    "axis may be dynamic for its buffer to be allocated ahead"
                )
            y = ort.OrtValue.ortvalue_from_shape_and_type(
                shape, _numpy_type(meta.type), self.memory_device, self.device_id
            )
            binding.bind_ortvalue_output(meta.name, y)
        options = _quiet_run_options()
        if self.uses_cuda_graph:
            options.add_run_config_entry(GPU_GRAPH_ID, str(graph_id))
        binding.synchronize_inputs()
        return _ShapeBinding(binding, x, options)

    def _run(self, shaped: _ShapeBinding) -> None:
        try:
            self.session.run_with_iobinding(shaped.binding, shaped.options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's types share no base class
            raise_onnxruntime_error(exc, self._run_failed(shaped.inputs.shape()))

    def _run_failed(self, shape: Any) -> str:
        return f"{_onnxruntime()} could not run {self.source} on input shape {tuple(shape)}"

    def bind(self, batch: np.ndarray) -> BoundCall:
        host = np.array(batch, order="C", copy=True)
        token = object()
        shaped = self._binding(host, owner=token)

        def run() -> None:
            self._last = shaped
            if shaped.owner is not token:  # another call of this shape ran in between
                shaped.load(host, token)
            self._run(shaped)

        # copy_outputs_to_cpu copies device outputs to the host, and CPU outputs out of the
        # bound buffers (which the next run overwrites).
        return BoundCall(run, lambda: shaped.binding.copy_outputs_to_cpu()[0])

    def bind_end_to_end(self, batch: np.ndarray) -> BoundCall | None:
        if self.device == "cpu":
            return None
        host = np.array(batch, order="C", copy=True)
        shaped = self._binding(host, owner=None)
        last: list[np.ndarray] = []

        def run() -> None:
            self._last = shaped
            shaped.load(host, None)  # the host->device copy is part of end-to-end
            self._run(shaped)
            last[:] = [shaped.binding.copy_outputs_to_cpu()[0]]

        return BoundCall(run, lambda: last[0])

    def sync(self) -> None:
        if self.device != "cpu" and self._last is not None:
            self._last.binding.synchronize_outputs()

    def device_memory(self) -> DeviceMemory | None:
        """This process's memory on the GPU (NVML or nvidia-smi), labelled device-wide where the
        process cannot be told apart; ``None`` on the CPU. onnxruntime's arena keeps what it
        grew to, so after a run this is close to the session's peak."""
        if self.device == "cpu":
            return None
        return process_device_memory(self.device_id)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.name,
            "device": self.device,
            "providers": self.session.get_providers() if self.session is not None else [],
            "intra_op_threads": self.config.threads(),
            "session_build": self.build.to_dict(),
        }
        if self.engine is not None:
            profile = self.engine.profile
            info["tensorrt"] = {
                "engine_key": self.engine.key,
                "model_sha256": self.engine.model_sha256,
                "profile": profile.to_dict() if profile else None,
            }
        if self.config.provider is not Provider.CPU:
            info["placement"] = self._placement.to_dict()
            if self.session is not None:
                info["provider_options"] = self.session.get_provider_options()
        return info

    def embedded_spec(self, expected: ModelSpec | None = None) -> ModelSpec:
        """The :class:`ModelSpec` the export wrote into the model's metadata, checked against
        ``expected`` (:func:`~resnext_deploy.runtime.base.spec_from_metadata`)."""
        meta = self.session.get_modelmeta().custom_metadata_map
        return spec_from_metadata(meta.get(SPEC_KEY), self.source, expected)

    def run_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output for ``batch``, in the model's order, in one session call."""
        try:
            return list(self.session.run(None, {self.input_name: batch}, self._run_options))
        except Exception as exc:  # noqa: BLE001 - onnxruntime's types share no base class
            raise_onnxruntime_error(exc, self._run_failed(batch.shape))

    def close(self) -> None:
        self._bound.clear()
        self._last = None
        self.session = None

    def _trt_cache_dir(self) -> Path | None:
        """This model's engine folder (keyed by its sha256 and the engine options)."""
        if self.engine is None or not self.config.tensorrt.engine_cache:
            return None
        return self.engine.cache_dir


def _tensor_info(meta: Any) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in meta.shape)
    return TensorInfo(meta.name, meta.type, shape)


def _listing(folder: Path | None) -> set[str]:
    if folder is None or not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir()}


_ONNX_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}


def _numpy_type(onnx_type: str) -> Any:
    try:
        return _ONNX_TYPES[onnx_type]
    except KeyError:
        raise ConfigError(f"an output of type {onnx_type} cannot be bound ahead") from None


def check_onnx_file(
    path: str | Path, config: SessionConfig | None = None, spec: ModelSpec | None = None
) -> None:
    """Raise :class:`ArtifactError` naming ``path`` and the cause unless the file loads into an
    onnxruntime session (on ``config``'s provider, the CPU by default) and carries ``spec``
    (the manifest's) in its metadata: the check a server makes before it starts anything that
    would fail later with the same cause, less clearly."""
    with OrtRunner(path, config) as runner:
        if spec is not None:
            runner.embedded_spec(spec)


def _quiet_run_options() -> Any:
    """Run options under which a failed run is not also logged by onnxruntime (in colour, on
    stderr): the error raised from it says it once, with the file's name."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # fatal only
    return options


def raise_onnxruntime_error(exc: Exception, what: str) -> NoReturn:
    """Raise ``exc`` as :class:`ArtifactError` ``what: <onnxruntime's cause>`` when it is one of
    onnxruntime's errors (its ``Fail``/``InvalidArgument``/... types, or a ``RuntimeError`` or
    ``MemoryError`` from its bindings); anything else (our own errors, bugs) as it is."""
    if isinstance(exc, DeployError) or not isinstance(exc, _onnxruntime_errors()):
        raise exc
    raise ArtifactError(f"{what}: {onnxruntime_cause(exc)}") from None


def _onnxruntime_errors() -> tuple[type[BaseException], ...]:
    from onnxruntime.capi import onnxruntime_pybind11_state as state

    own = (v for v in vars(state).values() if isinstance(v, type) and issubclass(v, Exception))
    return (*own, RuntimeError, MemoryError)


def _onnxruntime() -> str:
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__}"


# "[ONNXRuntimeError] : 1 : FAIL : " before every message
_STATUS = re.compile(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*")
# "Load model from <path> failed:" (the caller names the file)
_LOAD = re.compile(r"^Load model from .*? failed:\s*")
# "/onnxruntime_src/.../model.cc:256 onnxruntime::Model::Model(<args>) " before the reason
_SOURCE = re.compile(r"\S+\.(?:cc|cpp|h):\d+\s+(?:[^()]*?::[^()\s]*\([^()]*\)(?:\s*const)?\s+)?")
# "Non-zero status code returned while running Conv node. Name:'/conv1' Status Message: "
_NODE = re.compile(
    r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' Status Message:\s*"
)


def onnxruntime_cause(exc: BaseException, limit: int = 300) -> str:
    """The reason in one of onnxruntime's error messages, without its status code, source
    location and C++ signature: ``Unsupported model IR version: 14, max supported IR version:
    13`` or ``ConstantOfShape node '': Failed to allocate memory for requested buffer ...``."""
    text = str(exc).strip()
    text = _LOAD.sub("", _STATUS.sub("", text))
    text = _NODE.sub(lambda m: f"{m.group(1)} node {m.group(2)!r}: ", _SOURCE.sub("", text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(exc).__name__
