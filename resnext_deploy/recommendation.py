"""Which engine runs which variant of an export fastest, as measured: the record ``bench
--record`` (or ``export --recommend``) writes into the manifest, and what ``--engine auto``
follows. Never a guess: with no record, ``auto`` is refused.

Ground floor (no torch, no onnxruntime): a server reads it before it loads anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from resnext_deploy.errors import ArtifactError, ConfigError

MAX_PICKS = 64  # batch sizes one record may hold
VARIANTS = ("fp32", "fp16", "int8", "preprocess")  # artifact.Variant's values


class Engine(StrEnum):
    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"


class EngineChoice(StrEnum):
    """What a user may ask for: an engine, or ``auto``: the engine and variant the export's
    manifest records as measured fastest (``bench --record``)."""

    ONNXRUNTIME = "onnxruntime"
    OPENVINO = "openvino"
    AUTO = "auto"

    @property
    def engine(self) -> Engine | None:
        return None if self is EngineChoice.AUTO else Engine(self.value)


@dataclass(frozen=True)
class Pick:
    """The fastest engine x variant at one batch size among those that passed the accuracy
    gate: its median latency and its speed-up over onnxruntime fp32 in the same run."""

    engine: Engine
    variant: str
    p50_ms: float
    speedup: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine.value,
            "variant": self.variant,
            "p50_ms": self.p50_ms,
            "speedup_vs_onnxruntime_fp32": self.speedup,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Pick:
        if not isinstance(data, dict):
            raise ConfigError("a pick must be an object")
        try:
            engine = Engine(str(data.get("engine")))
        except ValueError:
            raise ConfigError(f"unknown engine {data.get('engine')!r}") from None
        variant = data.get("variant")
        if variant not in VARIANTS:
            raise ConfigError(f"unknown variant {variant!r}")
        p50 = _positive(data.get("p50_ms"), "p50_ms")
        speedup = data.get("speedup_vs_onnxruntime_fp32")
        return cls(engine, variant, p50, None if speedup is None else _positive(speedup, "speedup"))


@dataclass(frozen=True)
class Recommendation:
    """``picks``: batch size -> :class:`Pick`; where and how it was measured."""

    picks: dict[int, Pick]
    cpu: str
    threads: int
    measured_at: str
    command: str = ""

    def for_batch(self, batch_size: int) -> tuple[int, Pick]:
        """The pick measured at ``batch_size``, else at the largest measured size below it,
        else at the smallest measured size; with the batch size it was measured at."""
        sizes = sorted(self.picks)
        below = [b for b in sizes if b <= batch_size]
        size = below[-1] if below else sizes[0]
        return size, self.picks[size]

    def to_dict(self) -> dict[str, Any]:
        return {
            "picks": {str(b): p.to_dict() for b, p in sorted(self.picks.items())},
            "cpu": self.cpu,
            "threads": self.threads,
            "measured_at": self.measured_at,
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Recommendation:
        """Parse a record; raises :class:`ArtifactError` saying what is wrong with it."""
        try:
            return cls._parse(data)
        except ConfigError as exc:
            raise ArtifactError(f"the manifest's engine recommendation is invalid: {exc}") from None

    @classmethod
    def _parse(cls, data: Any) -> Recommendation:
        if not isinstance(data, dict) or not isinstance(data.get("picks"), dict):
            raise ConfigError("it must be an object with 'picks'")
        raw = data["picks"]
        if not raw or len(raw) > MAX_PICKS:
            raise ConfigError(f"it must hold 1 to {MAX_PICKS} batch sizes")
        picks = {}
        for key, value in raw.items():
            if not (isinstance(key, str) and key.isdigit() and 0 < int(key) <= 2**20):
                raise ConfigError(f"batch size {key!r} is not a positive integer")
            picks[int(key)] = Pick.from_dict(value)
        threads = data.get("threads")
        if not isinstance(threads, int) or isinstance(threads, bool) or not 0 < threads <= 4096:
            raise ConfigError("'threads' must be a positive integer")
        texts = [data.get(k, "") for k in ("cpu", "measured_at", "command")]
        if not all(isinstance(t, str) and len(t) <= 4096 for t in texts):
            raise ConfigError("'cpu', 'measured_at' and 'command' must be strings")
        return cls(picks, texts[0], threads, texts[1], texts[2])


def _positive(value: Any, what: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} must be a positive number, not {value!r}")
    return float(value)
