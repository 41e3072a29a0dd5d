"""TensorRT's options, its optimization profile, and the engine cache folder of one model.

onnxruntime's TensorRT provider names a cached engine after the model's file name, its
input/initializer/node-output names and versions, not after the weights: every export is
``model.onnx``, so a retrained checkpoint of the same architecture would load the first model's
engine without a word. Engines therefore go to one sub-folder of the cache per key: the sha256
of the model (its bytes, and those of any external-data file it names) and of the options that
change the engine (precision, builder level, auxiliary streams, the profile's shapes, the
onnxruntime version). TensorRT's timing cache holds kernel timings per layer and device, no
weights, so it stays shared in the cache folder itself.

Torch-free: onnx and onnxruntime are imported where a model is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from resnext_deploy.errors import ArtifactError, ConfigError

BUILDER_LEVELS = range(0, 6)  # TensorRT's builder optimization levels; onnxruntime's default: 3


def default_tensorrt_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/resnext-deploy/trt``, else ``~/.cache/resnext-deploy/trt``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "resnext-deploy" / "trt"


@dataclass(frozen=True, kw_only=True)
class TensorRTProfile:
    """One TensorRT optimization profile for the model's input: batch sizes ``min..max``, kernels
    tuned for ``opt``; ``dims`` are the input's other (fixed) dimensions."""

    input_name: str
    dims: tuple[int, ...]
    min_batch: int
    opt_batch: int
    max_batch: int

    def to_ort(self) -> dict[str, str]:
        def shape(batch: int) -> str:
            return f"{self.input_name}:" + "x".join(str(d) for d in (batch, *self.dims))

        return {
            "trt_profile_min_shapes": shape(self.min_batch),
            "trt_profile_opt_shapes": shape(self.opt_batch),
            "trt_profile_max_shapes": shape(self.max_batch),
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorRTProfile:
        return cls(
            input_name=str(data["input_name"]),
            dims=tuple(int(d) for d in data["dims"]),
            min_batch=int(data["min_batch"]),
            opt_batch=int(data["opt_batch"]),
            max_batch=int(data["max_batch"]),
        )


@dataclass(frozen=True, kw_only=True)
class TensorRTEngine:
    """What one TensorRT session is built with: its profile (``None``: the input's shape is fixed
    or no batch sizes were given) and the cache folder of its engines, ``<cache>/<key>``."""

    model_sha256: str
    key: str
    cache_dir: Path
    profile: TensorRTProfile | None = None


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    """TensorRT execution-provider options (onnxruntime's ``trt_*`` names).

    ``batch_sizes``: the batch sizes the session will see; with a dynamic batch axis they set one
    optimization profile (min and max of them, kernels tuned for ``opt_batch``, default the
    largest), so that the engine is built once, at session creation, instead of again for each
    new batch size inside a timed first call. :meth:`for_batch` gives an engine for one size.
    Engines go to a folder per model and engine options under ``cache_dir`` (default
    :func:`default_tensorrt_cache_dir`), timing caches to ``cache_dir``, unless switched off.
    ``builder_optimization_level`` (0-5) and ``auxiliary_streams`` (-1: TensorRT decides) shape
    the engine; ``cuda_graph`` replays it as one CUDA graph, which holds one input shape. TensorRT
    computes fp32 layers in TF32 on GPUs that have it (onnxruntime has no switch for that).
    """

    fp16: bool = False
    builder_optimization_level: int = 3
    auxiliary_streams: int = -1
    cuda_graph: bool = False
    engine_cache: bool = True
    timing_cache: bool = True
    cache_dir: str | None = None
    batch_sizes: tuple[int, ...] = ()
    opt_batch: int | None = None

    def __post_init__(self) -> None:
        if any(b < 1 for b in self.batch_sizes):
            raise ConfigError(f"TensorRT batch sizes must be positive, not {self.batch_sizes}")
        if (
            self.opt_batch is not None
            and self.batch_sizes
            and not (min(self.batch_sizes) <= self.opt_batch <= max(self.batch_sizes))
        ):
            raise ConfigError(
                f"TensorRT opt batch {self.opt_batch} lies outside the batch sizes "
                f"{min(self.batch_sizes)}..{max(self.batch_sizes)}"
            )
        if self.builder_optimization_level not in BUILDER_LEVELS:
            raise ConfigError(
                "TensorRT's builder optimization level lies in 0..5, not "
                f"{self.builder_optimization_level}"
            )
        if self.auxiliary_streams < -1:
            raise ConfigError(
                f"TensorRT auxiliary streams must be -1 (TensorRT decides) or more, not "
                f"{self.auxiliary_streams}"
            )

    def resolved_cache_dir(self) -> Path:
        """The cache folder itself: timing caches, and one sub-folder of engines per key."""
        return Path(self.cache_dir) if self.cache_dir else default_tensorrt_cache_dir()

    def for_batch(self, batch_size: int) -> TensorRTOptions:
        """These options with an engine built for ``batch_size`` alone (min = opt = max)."""
        return replace(self, batch_sizes=(batch_size,), opt_batch=None)

    def profile(self, input_name: str, dims: tuple[int, ...]) -> TensorRTProfile | None:
        """The optimization profile for an input with a dynamic batch axis, or ``None`` when no
        batch sizes were given."""
        if not self.batch_sizes:
            return None
        low, high = min(self.batch_sizes), max(self.batch_sizes)
        return TensorRTProfile(
            input_name=input_name,
            dims=dims,
            min_batch=low,
            opt_batch=self.opt_batch or high,
            max_batch=high,
        )

    def engine_options(self, profile: TensorRTProfile | None) -> dict[str, Any]:
        """The options a built engine depends on (the CUDA graph and the caches are not)."""
        return {
            "fp16": self.fp16,
            "builder_optimization_level": self.builder_optimization_level,
            "auxiliary_streams": self.auxiliary_streams,
            "profile": profile.to_dict() if profile else None,
        }

    def to_ort(self, device_id: int, engine: TensorRTEngine | None = None) -> dict[str, str]:
        """Provider options as onnxruntime takes them. The engine cache is on only with an
        ``engine`` (:func:`resolve_engine`): a folder shared by models would serve one model's
        engine to another."""
        opts = {
            "device_id": str(device_id),
            "trt_fp16_enable": str(int(self.fp16)),
            "trt_builder_optimization_level": str(self.builder_optimization_level),
            "trt_auxiliary_streams": str(self.auxiliary_streams),
            "trt_cuda_graph_enable": str(int(self.cuda_graph)),
        }
        if self.engine_cache and engine is not None:
            opts |= {"trt_engine_cache_enable": "1", "trt_engine_cache_path": str(engine.cache_dir)}
        if self.timing_cache:
            cache = str(self.resolved_cache_dir())
            opts |= {"trt_timing_cache_enable": "1", "trt_timing_cache_path": cache}
        if engine is not None and engine.profile is not None:
            opts |= engine.profile.to_ort()
        return opts

    def to_dict(self) -> dict[str, Any]:
        """The options as configured, for reports (the cache folder resolved)."""
        return asdict(self) | {"cache_dir": str(self.resolved_cache_dir())}


def resolve_engine(model: str | Path | bytes, options: TensorRTOptions) -> TensorRTEngine:
    """The profile and engine cache folder for ``model`` (a path or the model's bytes).

    Raises :class:`ArtifactError` when the model or an external-data file it names cannot be
    read, and :class:`ConfigError` when a profile is asked for an input whose non-batch
    dimensions are not fixed.
    """
    import onnx
    import onnxruntime
    from google.protobuf.message import DecodeError

    data = model if isinstance(model, bytes) else _read(Path(model))
    try:
        proto = onnx.load_model_from_string(data)
    except DecodeError:
        where = "the ONNX model" if isinstance(model, bytes) else str(model)
        raise ArtifactError(f"{where} is not an ONNX model (protobuf parsing failed)") from None
    digest = hashlib.sha256(data)
    if not isinstance(model, bytes):
        for location in _external_data(proto):
            digest.update(location.encode() + b"\0")
            digest.update(_read(Path(model).parent / location))
    model_sha = digest.hexdigest()
    profile = _profile(proto, options)
    engine = options.engine_options(profile) | {"onnxruntime": onnxruntime.__version__}
    options_sha = hashlib.sha256(json.dumps(engine, sort_keys=True).encode()).hexdigest()
    key = f"{model_sha[:16]}-{options_sha[:12]}"
    return TensorRTEngine(
        model_sha256=model_sha,
        key=key,
        cache_dir=options.resolved_cache_dir() / key,
        profile=profile,
    )


def first_input(proto: Any) -> tuple[str, tuple[int | str, ...]]:
    """Name and dimensions (ints, or the names of symbolic ones) of a model's first input."""
    initializers = {i.name for i in proto.graph.initializer}
    first = next(i for i in proto.graph.input if i.name not in initializers)
    dims = tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in first.type.tensor_type.shape.dim
    )
    return first.name, dims


def _profile(proto: Any, options: TensorRTOptions) -> TensorRTProfile | None:
    """TensorRT's profile for the model's input when its batch axis is dynamic and batch sizes
    were given; a fixed-shape model needs none."""
    if not options.batch_sizes:
        return None
    name, dims = first_input(proto)
    if not dims or isinstance(dims[0], int):
        return None
    rest = dims[1:]
    if not all(isinstance(d, int) for d in rest):
        raise ConfigError(
            f"TensorRT profiles need the input's non-batch dimensions fixed; {name!r} has {dims}"
        )
    return options.profile(name, tuple(int(d) for d in rest))


def _external_data(proto: Any) -> list[str]:
    """The external-data files the graph's initializers name, each once, in a fixed order."""
    locations = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(locations)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"cannot read the model file {path}: {exc.strerror or exc}") from None
