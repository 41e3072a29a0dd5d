"""CpuInfo from /proc/cpuinfo text: the ISA flags int8 and bf16 depend on, and the nominal fp32
peak the roofline uses."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from resnext_deploy.machine.cpu import CpuInfo, cpu_info, parse_cpuinfo

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 2450.000
flags\t\t: fpu sse sse2 avx avx2 fma f16c

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
cpu MHz\t\t: 3100.000
flags\t\t: fpu sse sse2 avx avx2 fma f16c
"""

CASCADE_LAKE = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
cpu MHz\t\t: 2500.000
flags\t\t: fpu sse avx avx2 fma avx512f avx512bw avx512_vnni

processor\t: 1
processor\t: 2
processor\t: 3
"""


def test_zen3_has_avx2_and_fma_but_no_int8_dot_product() -> None:
    cpu = parse_cpuinfo(ZEN3)
    assert (cpu.model, cpu.vendor, cpu.logical_cores) == ("AMD EPYC 7B13", "AuthenticAMD", 2)
    assert cpu.avx2 and cpu.fma and not cpu.avx512 and not cpu.vnni and not cpu.amx
    assert not cpu.int8_accelerated and not cpu.bf16
    assert cpu.clock_mhz == 2450.0  # the first processor's, not the fastest
    assert cpu.summary == "AVX2" and cpu.tracked == ["AVX2", "FMA"]


def test_an_avx512_vnni_xeon_has_an_int8_dot_product() -> None:
    cpu = parse_cpuinfo(CASCADE_LAKE)
    assert cpu.avx512 and cpu.vnni and not cpu.amx and cpu.int8_accelerated
    assert cpu.summary == "AVX2+AVX-512+VNNI" and cpu.logical_cores == 4
    assert cpu.tracked == ["AVX2", "FMA", "AVX-512", "AVX512-VNNI"]


def test_the_nominal_peak_is_cores_times_clock_times_two_fma_pipes_of_the_widest_vector() -> None:
    zen3 = parse_cpuinfo(ZEN3).nominal_peak_gflops(2)
    assert zen3.gflops == pytest.approx(2 * 2.45 * 2 * 2 * 8)  # 8 fp32 lanes, 2 FMA pipes
    assert zen3.basis == "2 cores x 2.45 GHz x 32 FLOP/cycle (AVX2, 2 FMA pipes)"
    xeon = parse_cpuinfo(CASCADE_LAKE).nominal_peak_gflops(4)
    assert xeon.gflops == pytest.approx(4 * 2.5 * 64)
    assert xeon.basis == "4 cores x 2.50 GHz x 64 FLOP/cycle (AVX-512, 2 FMA pipes)"
    sse = CpuInfo(model="old", flags=frozenset({"sse2"}), clock_mhz=2000.0)
    assert sse.nominal_peak_gflops(1).basis.endswith("8 FLOP/cycle (SSE, 1 FMA pipes)")


def test_the_isa_record_keeps_the_keys_exports_and_reports_hold() -> None:
    record = parse_cpuinfo(CASCADE_LAKE).to_dict()
    assert record == {
        "model": "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        "avx2": True,
        "avx512": True,
        "vnni": True,
        "amx": False,
        "summary": "AVX2+AVX-512+VNNI",
        "int8_accelerated": True,
    }


def test_an_unreadable_cpuinfo_gives_a_model_and_no_peak(tmp_path: Path) -> None:
    cpu = cpu_info(tmp_path / "missing")
    assert cpu.model and not cpu.flags and cpu.summary == "no AVX2"
    peak = cpu.nominal_peak_gflops(2)
    assert math.isnan(peak.gflops) and peak.basis == "unknown (no /proc/cpuinfo)"


def test_a_file_is_read_like_its_text(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(ZEN3)
    assert cpu_info(path) == parse_cpuinfo(ZEN3)
    assert cpu_info(str(path)).model == "AMD EPYC 7B13"


def test_the_nominal_peak_of_this_machine_follows_its_flags() -> None:
    peak = cpu_info().nominal_peak_gflops(2)
    assert peak.gflops > 0 and "FLOP/cycle" in peak.basis
