"""The settings of a ``predict --ray`` run, checked before Ray starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from resnext_deploy.errors import ConfigError
from resnext_deploy.predict import MAX_BATCH_SIZE, MAX_TOP_K
from resnext_deploy.recommendation import Engine
from resnext_deploy.runtime.providers import Provider
from resnext_deploy.validate import check_float, check_int, check_name

MAX_ACTORS = 1024
MAX_THREADS = 256
MAX_SHARD_SIZE = 100_000
DEFAULT_SHARD_SIZE = 1000  # inputs per output file: what an interrupted run may redo


@dataclass(frozen=True, kw_only=True)
class BatchConfig:
    """``model``: an export folder or an ONNX file. ``source``: a folder tree of images or a
    listing (``.txt``: a path per line; ``.csv``/``.parquet``: the ``column`` of paths). Results
    go to ``out_dir``; a run there with the same model and inputs is resumed.

    ``actors`` sessions of ``engine`` (onnxruntime or OpenVINO) of ``threads`` threads each take
    ``cpus_per_actor`` CPUs (and ``gpus_per_actor`` GPUs on CUDA) of the cluster's resources;
    decoding runs as tasks beside them."""

    model: Path
    source: Path
    out_dir: Path
    column: str = "path"
    provider: Provider = Provider.CPU
    engine: Engine = Engine.ONNXRUNTIME
    top_k: int = 5
    batch_size: int = 32
    actors: int = 1
    threads: int | None = None
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 1.0
    shard_size: int = DEFAULT_SHARD_SIZE
    address: str | None = None

    def __post_init__(self) -> None:
        check_name(self.column, "--column")
        check_int(self.top_k, "--top-k", 1, MAX_TOP_K)
        check_int(self.batch_size, "--batch-size", 1, MAX_BATCH_SIZE)
        check_int(self.actors, "--actors", 1, MAX_ACTORS)
        if self.threads is not None:
            check_int(self.threads, "--threads", 1, MAX_THREADS)
        check_float(self.cpus_per_actor, "--cpus-per-actor", 0.0, 1024.0, low_open=True)
        check_float(self.gpus_per_actor, "--gpus-per-actor", 0.0, 64.0, low_open=True)
        check_int(self.shard_size, "the shard size", 1, MAX_SHARD_SIZE)
        if self.engine is Engine.OPENVINO and self.provider is not Provider.CPU:
            raise ConfigError(
                f"the OpenVINO engine runs on the CPU here; the {self.provider.value} provider is "
                "onnxruntime's: use --engine onnxruntime with it"
            )

    @property
    def session_threads(self) -> int:
        """onnxruntime's intra-op threads per actor: as many as the CPUs it reserves."""
        return self.threads or max(1, round(self.cpus_per_actor))

    @property
    def actor_gpus(self) -> float:
        return self.gpus_per_actor if self.provider is not Provider.CPU else 0.0
