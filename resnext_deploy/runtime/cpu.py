"""The CPU's vector ISA, as far as int8 inference cares (Linux ``/proc/cpuinfo`` flags).

onnxruntime's int8 kernels (MLAS) use VNNI (``vpdpbusd``, AVX-512 VNNI or AVX-VNNI) and AMX when
the CPU has them. Without either, a u8 x s8 multiply-accumulate takes three AVX2 instructions
(``vpmaddubsw``, ``vpmaddwd``, ``vpaddd``) and int8 gains far less over fp32 FMA: onnxruntime
and OpenVINO both document VNNI as what makes int8 pay.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuIsa:
    model: str
    avx2: bool = False
    avx512: bool = False
    vnni: bool = False
    amx: bool = False

    @property
    def summary(self) -> str:
        names = [n for n, on in (("AVX2", self.avx2), ("AVX-512", self.avx512)) if on]
        names += [n for n, on in (("VNNI", self.vnni), ("AMX", self.amx)) if on]
        return "+".join(names) or "no AVX2"

    @property
    def int8_accelerated(self) -> bool:
        """True when the CPU has an int8 dot-product instruction (VNNI or AMX)."""
        return self.vnni or self.amx

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"summary": self.summary, "int8_accelerated": self.int8_accelerated}


def parse_cpuinfo(text: str) -> CpuIsa:
    """The ISA of the first processor listed in ``/proc/cpuinfo`` text."""
    flags: set[str] = set()
    model = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return CpuIsa(
        model=model or platform.processor() or platform.machine(),
        avx2="avx2" in flags,
        avx512="avx512f" in flags,
        vnni=bool({"avx512_vnni", "avx_vnni"} & flags),
        amx=bool({"amx_int8", "amx_tile"} & flags),
    )


def cpu_isa(path: Path = CPUINFO) -> CpuIsa:
    """This machine's ISA; every flag false where ``/proc/cpuinfo`` cannot be read."""
    try:
        return parse_cpuinfo(path.read_text())
    except OSError:
        return CpuIsa(model=platform.processor() or platform.machine())
