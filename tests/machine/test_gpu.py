"""GPU facts come from NVML when it answers and from nvidia-smi otherwise, for the CUDA device
the caller means (CUDA_VISIBLE_DEVICES mapped); no torch, no real GPU: a fake ``pynvml`` module
and a fake ``nvidia-smi`` on PATH."""

from __future__ import annotations

import os
import stat
import sys
import types
from pathlib import Path

import pytest

from resnext_deploy.environment import environment
from resnext_deploy.machine.gpu import device_usage, gpu_properties, physical_index

MIB = 2**20

# Answers the queries resnext-deploy makes; logs its arguments so the test sees which device.
FAKE_SMI = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
case "$*" in
  *--query-gpu=name,memory.total,compute_cap,driver_version*)
    echo "NVIDIA A10G, 23028, 8.6, 550.54.15" ;;
  *--query-gpu=memory.used*) echo "7000" ;;
  *--query-compute-apps=pid,used_memory*) printf '111, 900\\n444, [N/A]\\n' ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake ``nvidia-smi`` first on PATH, NVML absent; returns its call log."""
    script = tmp_path / "nvidia-smi"
    script.write_text(FAKE_SMI)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return tmp_path / "calls.log"


@pytest.fixture
def no_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setitem(sys.modules, "pynvml", None)


def fake_pynvml(seen: list[object], fail: bool = False) -> types.ModuleType:
    def handle(index: object) -> str:
        if fail:
            raise RuntimeError("NVML_ERROR_UNKNOWN")
        seen.append(index)
        return "handle"

    module = types.ModuleType("pynvml")
    module.nvmlInit = lambda: None  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: seen.append("shutdown")  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByUUID = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: b"NVIDIA H200"  # type: ignore[attr-defined]
    module.nvmlDeviceGetCudaComputeCapability = lambda h: (9, 0)  # type: ignore[attr-defined]
    module.nvmlSystemGetDriverVersion = lambda: "580.159.04"  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=143771 * MIB, used=5000 * MIB
    )
    module.nvmlDeviceGetComputeRunningProcesses = lambda h: [  # type: ignore[attr-defined]
        types.SimpleNamespace(pid=222, usedGpuMemory=300 * MIB),
        types.SimpleNamespace(pid=333, usedGpuMemory=None),  # not accounted per process
    ]
    return module


def test_cuda_device_numbers_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert physical_index(1) == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1234abcd")
    assert physical_index(0) == "GPU-1234abcd"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_index(1) == 1


def test_nvml_answers_first_for_the_mapped_device(
    monkeypatch: pytest.MonkeyPatch, smi: Path
) -> None:
    seen: list[object] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(seen))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    gpu = gpu_properties(0)
    assert gpu is not None and gpu.to_dict() == {
        "name": "NVIDIA H200",
        "memory_mb": 143771.0,
        "compute_capability": "9.0",
        "driver": "580.159.04",
        "source": "nvml",
    }
    usage = device_usage(0)
    assert usage is not None and (usage.processes, usage.used_mb) == ({222: 300.0}, 5000.0)
    assert seen == [5, "shutdown", 5, "shutdown"] and not smi.exists()  # smi never asked


def test_nvidia_smi_answers_when_nvml_fails(monkeypatch: pytest.MonkeyPatch, smi: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], fail=True))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    gpu = gpu_properties(0)
    assert gpu is not None
    assert (gpu.name, gpu.memory_mb, gpu.compute_capability, gpu.driver, gpu.source) == (
        "NVIDIA A10G",
        23028.0,
        "8.6",
        "550.54.15",
        "nvidia-smi",
    )
    usage = device_usage(0)
    assert usage is not None and usage.source == "nvidia-smi"
    assert (usage.processes, usage.used_mb) == ({111: 900.0}, 7000.0)  # [N/A] left out
    assert all(line.startswith("--id=1 ") for line in smi.read_text().splitlines())


def test_no_nvml_and_no_nvidia_smi_means_no_gpu(no_gpu: None) -> None:
    assert gpu_properties(0) is None and device_usage(0) is None
    assert environment()["gpu"] is None


def test_the_environment_block_keeps_its_gpu_shape(smi: Path) -> None:
    assert environment()["gpu"] == {
        "name": "NVIDIA A10G",
        "driver": "550.54.15",
        "memory": "23028 MiB",
    }
