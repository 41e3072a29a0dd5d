"""What a model server is asked to be: one frozen config, also carried as the ``args`` of the
Serve application (a plain JSON-able dict), so ``serve deploy`` builds exactly what
``resnext-deploy serve`` runs. Ray-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from resnext_deploy.artifact import Variant, check_model_name, model_name_for, parse_variant
from resnext_deploy.errors import ConfigError
from resnext_deploy.runtime.providers import Provider

DEFAULT_PORT = 8000
IMPORT_PATH = "resnext_deploy.serve.app:build_app"


@dataclass(frozen=True, kw_only=True)
class ServeConfig:
    """One served model.

    ``max_batch_size`` bounds the images in one onnxruntime call, and the images one request may
    carry. ``batch_wait_ms`` is how long a replica waits for a batch to fill; with ``batching``
    off every request runs alone, one at a time per replica. ``threads`` is onnxruntime's
    intra-op threads per replica (``None``: every core the replica's process may use).
    ``address`` is a Ray cluster to deploy to (``None``: start a local Ray, unless
    ``RAY_ADDRESS`` is set).
    """

    export_dir: Path
    variant: Variant = Variant.FP32
    provider: Provider = Provider.CPU
    model_name: str | None = None
    replicas: int = 1
    max_batch_size: int = 32
    batch_wait_ms: float = 5.0
    batching: bool = True
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    address: str | None = None
    threads: int | None = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 1.0
    max_body_bytes: int = 64 << 20
    max_image_pixels: int = 50_000_000
    metrics_port: int | None = None
    access_log: bool = True
    check_hashes: bool = True

    def __post_init__(self) -> None:
        # The name is one URL path segment and one Ray deployment name.
        if self.model_name is not None:
            check_model_name(self.model_name)
        if self.provider is Provider.TENSORRT:
            raise ConfigError("serving runs on the cpu or cuda provider, not tensorrt")
        if self.replicas < 1 or self.max_batch_size < 1:
            raise ConfigError("replicas and max batch size must be >= 1")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise ConfigError(f"batch wait must lie in 0..10000 ms, got {self.batch_wait_ms}")
        if not 0 < self.port < 65536 or (
            self.metrics_port is not None and not 0 < self.metrics_port < 65536
        ):
            raise ConfigError("ports must lie in 1..65535")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ConfigError("CPUs and GPUs per replica must be >= 0")
        if self.provider is Provider.CUDA and self.gpus_per_replica <= 0:
            raise ConfigError("a CUDA replica needs a GPU share > 0 (e.g. 0.5 for two per GPU)")
        if self.max_body_bytes < 1024 or self.max_image_pixels < 1:
            raise ConfigError("the body limit must be >= 1 KiB and the pixel limit >= 1")

    def name_for(self, arch: str) -> str:
        """The served model's name: as configured, else the architecture's."""
        return self.model_name or model_name_for(arch)

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
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"invalid serve settings: {exc}") from None
