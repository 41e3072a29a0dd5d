"""The typed benchmark report: what ``bench`` returns, what its JSON file holds, and what
``compare``, the writers, Triton's preferred batch sizes and the headline script read back."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resnext_deploy.bench.harness import HarnessOverhead, Measurement, Status
from resnext_deploy.bench.roofline import ComputeFloor
from resnext_deploy.errors import BenchmarkError
from resnext_deploy.fileio import atomic_write_text
from resnext_deploy.runtime.tensorrt import TensorRTProfile

REPORT_FORMAT = 2

T = TypeVar("T")


@dataclass(kw_only=True)
class BenchReport:
    model: str
    arch: str
    input_size: int
    gmacs_per_image: float
    provider: str
    threads: int
    batch_sizes: list[int]
    results: list[Measurement]
    backends: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    overhead: HarnessOverhead | None = None
    compute_floor: ComputeFloor | None = None  # CPU runs only
    best: dict[int, str] = field(default_factory=dict)
    tuning: dict[int, str] | None = None

    def rows(self, backend_prefix: str = "") -> list[Measurement]:
        """Successful measurements of backends whose name starts with ``backend_prefix``."""
        return [
            m
            for m in self.results
            if m.status is Status.OK and m.stats and m.backend.startswith(backend_prefix)
        ]

    def backend_names(self) -> list[str]:
        return list(dict.fromkeys(m.backend for m in self.results))

    def engine_profiles(self) -> dict[str, dict[int, TensorRTProfile]]:
        """Backend -> batch size -> the TensorRT profile its row's engine was built for."""
        profiles: dict[str, dict[int, TensorRTProfile]] = {}
        for m in self.results:
            if m.engine_profile is not None:
                profiles.setdefault(m.backend, {})[m.batch_size] = m.engine_profile
        return profiles

    def preferred_batch_sizes(
        self, max_batch_size: int, backend_prefix: str = "onnxruntime", keep: int = 2
    ) -> tuple[int, ...]:
        """The ``keep`` batch sizes up to ``max_batch_size`` with the highest measured throughput
        of the backends named ``backend_prefix...``. Raises :class:`BenchmarkError` if none."""
        rows = [m for m in self.rows(backend_prefix) if m.batch_size <= max_batch_size]
        if not rows:
            raise BenchmarkError(
                f"the report has no {backend_prefix} measurement up to batch {max_batch_size}"
            )
        best = sorted(rows, key=lambda m: -(m.stats.images_per_s if m.stats else 0.0))[:keep]
        return tuple(sorted({m.batch_size for m in best}))

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "results"}
        d["overhead"] = self.overhead.to_dict() if self.overhead else None
        d["compute_floor"] = self.compute_floor.to_dict() if self.compute_floor else None
        d["format"] = REPORT_FORMAT
        d["results"] = [m.to_dict() for m in self.results]
        return finite_json(d)

    def to_json(self) -> str:
        """JSON without NaN or Infinity (invalid JSON for most parsers): such values are null."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False, default=str)

    def save(self, path: Path) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: Any, source: str = "report") -> BenchReport:
        """Rebuild a report; raises :class:`BenchmarkError` naming what does not fit."""
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise BenchmarkError(f"{source} is not a resnext-deploy benchmark report (no results)")
        try:
            results = [Measurement.from_dict(r) for r in data["results"]]
            return cls(
                model=str(data["model"]),
                arch=str(data["arch"]),
                input_size=int(data["input_size"]),
                gmacs_per_image=float(data.get("gmacs_per_image") or 0.0),
                provider=str(data["provider"]),
                threads=int(data["threads"]),
                batch_sizes=[int(b) for b in data["batch_sizes"]],
                results=results,
                backends=list(data.get("backends") or []),
                config=dict(data.get("config") or {}),
                environment=dict(data.get("environment") or {}),
                command=str(data.get("command") or (data.get("config") or {}).get("command", "")),
                overhead=_read(HarnessOverhead.from_dict, data.get("overhead")),
                compute_floor=_read(ComputeFloor.from_dict, data.get("compute_floor")),
                best={int(k): str(v) for k, v in (data.get("best") or {}).items()},
                tuning=(
                    {int(k): str(v) for k, v in data["tuning"].items()}
                    if data.get("tuning")
                    else None
                ),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BenchmarkError(
                f"{source} is not a resnext-deploy benchmark report ({type(exc).__name__}: {exc})"
            ) from None


def _read(from_dict: Callable[[dict[str, Any]], T], data: Any) -> T | None:
    """An optional block of a report: ``None`` where the report holds none."""
    return from_dict(data) if data else None


def load_report(path: Path) -> BenchReport:
    """Read a ``bench`` JSON file; raises :class:`BenchmarkError` for anything else."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise BenchmarkError(f"benchmark report not found: {path}") from None
    except IsADirectoryError:
        raise BenchmarkError(f"{path} is a directory, not a benchmark report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchmarkError(f"{path} is not a JSON benchmark report ({exc})") from None
    return BenchReport.from_dict(data, str(path))


def finite_json(value: Any) -> Any:
    """``value`` with every NaN/Infinity float replaced by ``None`` (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(v) for v in value]
    return value
