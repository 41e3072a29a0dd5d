"""The CPU as Linux's ``/proc/cpuinfo`` describes it: one :class:`CpuInfo` that the environment
block, doctor, the int8 export, the profiler and the benchmark's roofline all read.

onnxruntime's int8 kernels (MLAS) use VNNI (``vpdpbusd``, AVX-512 VNNI or AVX-VNNI) and AMX when
the CPU has them. Without either, a u8 x s8 multiply-accumulate takes three AVX2 instructions
(``vpmaddubsw``, ``vpmaddwd``, ``vpaddd``) and int8 gains far less over fp32 FMA: onnxruntime
and OpenVINO both document VNNI as what makes int8 pay.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")

# x86 flags that decide how int8 and bf16 run, with the names doctor shows for them.
TRACKED_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


@dataclass(frozen=True)
class NominalPeak:
    """A nominal fp32 peak and how it was reckoned (``gflops`` is NaN when it cannot be)."""

    gflops: float
    basis: str


@dataclass(frozen=True, kw_only=True)
class CpuInfo:
    """The first processor's model and flags, its clock and the number of logical CPUs. The ISA
    properties are read off ``flags``, so that they cannot disagree with them."""

    model: str
    vendor: str = ""
    flags: frozenset[str] = field(default_factory=frozenset)
    # the first processor's "cpu MHz": 0.0 where the file names none (e.g. on ARM), None where
    # /proc/cpuinfo could not be read at all
    clock_mhz: float | None = 0.0
    logical_cores: int = 1

    @property
    def avx2(self) -> bool:
        return "avx2" in self.flags

    @property
    def fma(self) -> bool:
        return "fma" in self.flags

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    @property
    def vnni(self) -> bool:
        return bool({"avx512_vnni", "avx_vnni"} & self.flags)

    @property
    def amx(self) -> bool:
        return bool({"amx_int8", "amx_tile"} & self.flags)

    @property
    def bf16(self) -> bool:
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)

    @property
    def tracked(self) -> list[str]:
        """The names of the :data:`TRACKED_FLAGS` this CPU has, in that table's order."""
        return [label for flag, label in TRACKED_FLAGS.items() if flag in self.flags]

    @property
    def summary(self) -> str:
        names = [n for n, on in (("AVX2", self.avx2), ("AVX-512", self.avx512)) if on]
        names += [n for n, on in (("VNNI", self.vnni), ("AMX", self.amx)) if on]
        return "+".join(names) or "no AVX2"

    @property
    def label(self) -> str:
        """The model with the instruction sets speed depends on: two CPUs that both call
        themselves "AMD EPYC" may differ in AVX-512 and VNNI, and so in which engine wins."""
        return f"{self.model} ({self.summary})"

    @property
    def int8_accelerated(self) -> bool:
        """True when the CPU has an int8 dot-product instruction (VNNI or AMX)."""
        return self.vnni or self.amx

    def nominal_peak_gflops(self, cores: int) -> NominalPeak:
        """Nominal fp32 peak of ``cores`` cores: cores x clock x FLOP per cycle, where FLOP per
        cycle assumes two FMA pipes of the widest vector unit the flags announce (AVX-512: 16
        lanes, AVX2: 8). Turbo clocks can exceed the nominal clock, so treat this as an
        estimate."""
        if self.clock_mhz is None:
            return NominalPeak(float("nan"), "unknown (no /proc/cpuinfo)")
        lanes = 16 if self.avx512 else 8 if self.avx2 else 4
        fma = 2 if self.fma or lanes == 16 else 1
        per_cycle = 2 * fma * lanes  # an FMA is two FLOPs
        isa = "AVX-512" if lanes == 16 else "AVX2" if lanes == 8 else "SSE"
        ghz = self.clock_mhz / 1e3
        return NominalPeak(
            cores * ghz * per_cycle,
            f"{cores} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa}, {fma} FMA pipes)",
        )

    def to_dict(self) -> dict[str, Any]:
        """The ISA as int8 exports and profile reports record it (their ``cpu_isa``/``cpu``)."""
        return {
            "model": self.model,
            "avx2": self.avx2,
            "avx512": self.avx512,
            "vnni": self.vnni,
            "amx": self.amx,
            "summary": self.summary,
            "int8_accelerated": self.int8_accelerated,
        }


def parse_cpuinfo(text: str) -> CpuInfo:
    """The first processor listed in ``/proc/cpuinfo`` text; the logical CPUs are the
    ``processor`` entries (this machine's count where the text lists none)."""
    first: dict[str, str] = {}
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        processors += key == "processor"
        if key in ("vendor_id", "model name", "flags", "cpu MHz") and not first.get(key):
            first[key] = value.strip()
    return CpuInfo(
        model=first.get("model name") or _platform_model(),
        vendor=first.get("vendor_id", ""),
        flags=frozenset(first.get("flags", "").split()),
        clock_mhz=_mhz(first.get("cpu MHz", "")),
        logical_cores=processors or os.cpu_count() or 1,
    )


def _mhz(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def cpu_info(path: Path | str = CPUINFO) -> CpuInfo:
    """This machine's CPU (``path``: another ``cpuinfo`` file, for tests); the model from
    :mod:`platform` and no flags where the file cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return CpuInfo(model=_platform_model(), clock_mhz=None, logical_cores=os.cpu_count() or 1)
    return parse_cpuinfo(text)


def _platform_model() -> str:
    return platform.processor() or platform.machine()
