"""The typed benchmark report: what ``bench`` returns, what its JSON file holds, and what
``compare``, the writers, Triton's preferred batch sizes, the headline script and ``bench
--record`` read back."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from resnext_deploy.bench.gate import GateResult
from resnext_deploy.bench.harness import (
    MAX_COUNT,
    MAX_FIGURE,
    HarnessOverhead,
    Measurement,
    Status,
)
from resnext_deploy.bench.roofline import ComputeFloor
from resnext_deploy.errors import BenchmarkError, ConfigError
from resnext_deploy.fileio import atomic_write_text
from resnext_deploy.recommendation import Pick
from resnext_deploy.runtime.tensorrt import TensorRTProfile
from resnext_deploy.validate import check_float, check_int, load_json

REPORT_FORMAT = 2
# What reading a block of another shape raises (a missing key, a list for a number, ...).
_MISFITS = (KeyError, TypeError, ValueError, AttributeError, OverflowError)

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
    # --engines: each deployable row against eager, and per batch size the fastest that passed
    gate: list[GateResult] = field(default_factory=list)
    recommended: dict[int, Pick] = field(default_factory=dict)

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

    def gate_result(self, backend: str) -> GateResult | None:
        """How ``backend`` did at the accuracy gate (``None``: not a gated row)."""
        return next((g for g in self.gate if g.backend == backend), None)

    def to_dict(self) -> dict[str, Any]:
        skip = ("results", "gate", "recommended")
        d = {k: v for k, v in self.__dict__.items() if k not in skip}
        d["overhead"] = self.overhead.to_dict() if self.overhead else None
        d["compute_floor"] = self.compute_floor.to_dict() if self.compute_floor else None
        if self.gate:  # a report without --engines keeps the keys it always had
            d["gate"] = [g.to_dict() for g in self.gate]
            d["recommended"] = {str(b): p.to_dict() for b, p in self.recommended.items()}
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
            return cls._read(data)
        except (BenchmarkError, ConfigError, *_MISFITS) as exc:
            cause = str(exc) if isinstance(exc, BenchmarkError) else f"{type(exc).__name__}: {exc}"
            raise BenchmarkError(
                f"{source} is not a resnext-deploy benchmark report ({cause})"
            ) from None

    @classmethod
    def _read(cls, data: dict[str, Any]) -> BenchReport:
        """:meth:`from_dict` without the message: raises what the first misfit raises."""
        config = _block(data.get("config"), dict, "config")
        return cls(
            model=str(data["model"]),
            arch=str(data["arch"]),
            input_size=check_int(data["input_size"], "input_size", 1, MAX_COUNT, BenchmarkError),
            gmacs_per_image=_number(data.get("gmacs_per_image") or 0.0, "gmacs_per_image"),
            provider=str(data["provider"]),
            threads=check_int(data["threads"], "threads", 1, MAX_COUNT, BenchmarkError),
            batch_sizes=[
                _count(b, "batch_sizes") for b in _block(data["batch_sizes"], list, "batch_sizes")
            ],
            results=[Measurement.from_dict(r) for r in data["results"]],
            backends=_block(data.get("backends"), list, "backends"),
            config=config,
            environment=_block(data.get("environment"), dict, "environment"),
            command=str(data.get("command") or config.get("command", "")),
            overhead=_optional(HarnessOverhead.from_dict, data.get("overhead")),
            compute_floor=_optional(ComputeFloor.from_dict, data.get("compute_floor")),
            best=_per_batch(data.get("best") or {}, "best", str),
            tuning=_per_batch(data["tuning"], "tuning", str) if data.get("tuning") else None,
            gate=[GateResult.from_dict(g) for g in _block(data.get("gate"), list, "gate")],
            recommended=_per_batch(data.get("recommended"), "recommended", Pick.from_dict),
        )


def _optional(from_dict: Callable[[dict[str, Any]], T], data: Any) -> T | None:
    """An optional block of a report: ``None`` where the report holds none."""
    return from_dict(data) if data else None


def _block(value: Any, kind: type, what: str) -> Any:
    """``value`` (empty for null) if it is a ``kind`` (a JSON object or list)."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise BenchmarkError(f"{what} must be a JSON {'object' if kind is dict else 'list'}")
    return value


def _count(value: Any, what: str) -> int:
    return check_int(value, what, 1, MAX_COUNT, BenchmarkError)


def _number(value: Any, what: str) -> float:
    return check_float(value, what, 0.0, MAX_FIGURE, BenchmarkError)


def _per_batch(value: Any, what: str, read: Callable[[Any], T]) -> dict[int, T]:
    """A ``{"<batch size>": <item>}`` block, each item read by ``read`` (``str`` for a
    backend's name; :meth:`Pick.from_dict` raises :class:`ConfigError` for a pick that is not
    one)."""
    found = {}
    for key, item in _block(value, dict, what).items():
        if not (key.isdigit() and len(key) <= 10):
            raise BenchmarkError(f"{what}: {key!r} is not a batch size")
        found[_count(int(key), what)] = read(item)
    return found


def load_report(path: Path) -> BenchReport:
    """Read a ``bench`` JSON file; raises :class:`BenchmarkError` for anything else: a file
    that is not a regular file (a FIFO would block, /dev/zero never end), JSON nested or sized
    beyond what a report is (:func:`~resnext_deploy.validate.load_json`), or figures that are
    not measurements."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise BenchmarkError(f"benchmark report not found: {path}")
    data = load_json(path, "benchmark report", BenchmarkError)
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
