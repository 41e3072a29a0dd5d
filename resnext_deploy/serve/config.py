"""What a model server is asked to be: one frozen config, also carried as the ``args`` of the
Serve application (a plain JSON-able dict), so ``serve deploy`` builds exactly what
``resnext-deploy serve`` runs. Ray-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import Variant, check_model_name, model_name_for, parse_variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.validate import check_float, check_int

DEFAULT_PORT = 8000
IMPORT_PATH = "resnext_deploy.serve.app:build_app"
# Bounds of the settings (the CLI's --help says them). A batch is also one request's images.
MAX_REPLICAS = 1024
MAX_BATCH_SIZE = 4096
MAX_BATCH_WAIT_MS = 10_000.0
MAX_THREADS = 1024
MAX_CPUS_PER_REPLICA = 1024.0
MAX_GPUS_PER_REPLICA = 64.0
MIN_BODY_MB, MAX_BODY_MB = 1 / 1024, 4096.0  # 1 KiB .. 4 GiB
MAX_IMAGE_PIXELS = 1_000_000_000
MAX_BODY_TIMEOUT_S = 3600.0
MAX_UPLOADS = 100_000
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_BODY_TIMEOUT_S = 30.0
DEFAULT_MAX_UPLOADS = 128


def check_upload_limits(max_body_bytes: int, body_timeout_s: float, max_uploads: int) -> None:
    """Raise :class:`ConfigError` unless the three limits on request bodies are in range."""
    low, high = int(MIN_BODY_MB * 2**20), int(MAX_BODY_MB * 2**20)
    check_int(max_body_bytes, "the body limit (bytes)", low, high)
    check_float(body_timeout_s, "body timeout (s)", 0, MAX_BODY_TIMEOUT_S, low_open=True)
    check_int(max_uploads, "max uploads", 1, MAX_UPLOADS)


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """One served model.

    ``max_batch_size`` bounds the images in one onnxruntime call, and the images one request may
    carry. ``batch_wait_ms`` is how long a replica waits for a batch to fill; with ``batching``
    off every request runs alone, one at a time per replica. ``threads`` is onnxruntime's
    intra-op threads per replica (``None``: every core the replica's process may use), or
    OpenVINO's with ``engine`` OpenVINO (its CPU plugin).
    ``grpc_port``: also serve the protocol's gRPC form there (``None``: HTTP only).
    ``address`` is a Ray cluster to deploy to (``None``: start a local Ray, unless
    ``RAY_ADDRESS`` is set). A request body must arrive within ``body_timeout_s`` (408 after
    it); at most ``max_uploads`` bodies are read at once, each up to ``max_body_bytes``, before
    a request reaches a replica (:mod:`resnext_deploy.serve.uploads`).
    """

    export_dir: Path
    variant: Variant = Variant.FP32
    provider: Provider = Provider.CPU
    engine: Engine = Engine.ONNXRUNTIME
    model_name: str | None = None
    replicas: int = 1
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    batching: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    grpc_port: int | None = None
    address: str | None = None
    threads: int | None = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 1.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = 50_000_000
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    max_uploads: int = DEFAULT_MAX_UPLOADS
    metrics_port: int | None = None
    access_log: bool = True
    check_hashes: bool = True

    def __post_init__(self) -> None:
        # The name is one URL path segment and one Ray deployment name.
        if self.model_name is not None:
            check_model_name(self.model_name)
        if self.provider is Provider.TENSORRT:
            raise ConfigError("serving runs on the cpu or cuda provider, not tensorrt")
        if not isinstance(self.engine, Engine):
            raise ConfigError(f"unknown engine {self.engine!r}")
        if self.engine is Engine.OPENVINO and self.provider is not Provider.CPU:
            raise ConfigError(
                f"the OpenVINO engine serves on the CPU here; the {self.provider.value} "
                "provider is onnxruntime's: use --engine onnxruntime with it"
            )
        check_int(self.replicas, "replicas", 1, MAX_REPLICAS)
        check_int(self.max_batch_size, "max batch size", 1, MAX_BATCH_SIZE)
        check_float(self.batch_wait_ms, "batch wait (ms)", 0, MAX_BATCH_WAIT_MS)
        check_int(self.port, "port", 1, 65535)
        if self.grpc_port is not None:
            check_int(self.grpc_port, "gRPC port", 1, 65535)
            if self.grpc_port == self.port:
                raise ConfigError(f"the HTTP and gRPC ports must differ, both are {self.port}")
        if self.metrics_port is not None:
            check_int(self.metrics_port, "metrics port", 1, 65535)
        if self.threads is not None:
            check_int(self.threads, "threads", 1, MAX_THREADS)
        check_float(self.cpus_per_replica, "CPUs per replica", 0, MAX_CPUS_PER_REPLICA)
        check_float(self.gpus_per_replica, "GPUs per replica", 0, MAX_GPUS_PER_REPLICA)
        if self.provider is Provider.CUDA and self.gpus_per_replica <= 0:
            raise ConfigError("a CUDA replica needs a GPU share > 0 (e.g. 0.5 for two per GPU)")
        check_upload_limits(self.max_body_bytes, self.body_timeout_s, self.max_uploads)
        check_int(self.max_image_pixels, "the image pixel limit", 1, MAX_IMAGE_PIXELS)
        for flag in ("batching", "access_log", "check_hashes"):
            if not isinstance(getattr(self, flag), bool):
                raise ConfigError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"host must be an address such as 127.0.0.1, got {self.host!r}")

    def name_for(self, arch: str) -> str:
        """The served model's name: as configured, else the architecture's."""
        return self.model_name or model_name_for(arch)

    @staticmethod
    def body_bytes(megabytes: float) -> int:
        """``--max-body-mb`` in bytes; raises :class:`ConfigError` for NaN, infinity or a value
        outside 1 KiB .. 4 GiB (before ``int()`` could fail on it)."""
        if not (isinstance(megabytes, int | float) and MIN_BODY_MB <= megabytes <= MAX_BODY_MB):
            raise ConfigError(
                f"--max-body-mb must be a number of MB from 1/1024 (1 KiB) to {MAX_BODY_MB:g}, "
                f"got {megabytes}"
            )
        return int(megabytes * 2**20)

    @property
    def max_ongoing_requests(self) -> int:
        """Requests a replica accepts at once: a full batch running and the next one forming."""
        return 2 * self.max_batch_size

    @property
    def num_gpus(self) -> float:
        return self.gpus_per_replica if self.provider is Provider.CUDA else 0.0

    def to_args(self) -> dict[str, Any]:
        """The application's ``args`` (JSON types only; the export path made absolute)."""
        data = asdict(self)
        data["export_dir"] = str(Path(self.export_dir).resolve())
        data["variant"], data["provider"] = self.variant.value, self.provider.value
        data["engine"] = self.engine.value
        return data

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> ServeConfig:
        """Parse ``args`` as written by :meth:`to_args` (or by hand in a Serve config file);
        raises :class:`ConfigError` naming an unknown or missing key."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(args) - known)
        if unknown:
            raise ConfigError(f"unknown serve setting(s): {', '.join(unknown)}")
        if "export_dir" not in args:
            raise ConfigError("the serve settings need 'export_dir'")
        data = dict(args)
        data["export_dir"] = Path(data["export_dir"])
        data["variant"] = parse_variant(str(data.get("variant", "fp32")))
        try:
            data["provider"] = Provider(str(data.get("provider", "cpu")).lower())
        except ValueError:
            raise ConfigError(f"unknown provider {data.get('provider')!r}") from None
        try:
            data["engine"] = Engine(str(data.get("engine", "onnxruntime")).lower())
        except ValueError:
            raise ConfigError(f"unknown engine {data.get('engine')!r}") from None
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid serve settings: {exc}") from None
