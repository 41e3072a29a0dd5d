"""Device-memory figures say what they cover: this process when NVML lists it, the whole device
otherwise (the CUDA device numbering: tests/machine/test_gpu.py)."""

from __future__ import annotations

import os
import re
import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

from resnext_deploy.machine import gpu
from resnext_deploy.runtime.device_memory import MemoryScope, process_device_memory

MIB = 2**20
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    pid: int
    usedGpuMemory: int | None  # noqa: N815 - pynvml's field name


def fake_pynvml(processes: list[Proc], used: int, seen: list[object]) -> types.ModuleType:
    module = types.ModuleType("pynvml")
    module.nvmlInit = lambda: None  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = lambda i: seen.append(i) or "handle"  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByUUID = lambda u: seen.append(u) or "handle"  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=used)  # type: ignore[attr-defined]
    module.nvmlDeviceGetComputeRunningProcesses = lambda h: processes  # type: ignore[attr-defined]
    return module


@pytest.fixture
def no_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_smi_usage", lambda index: None)


def test_this_process_is_measured_when_nvml_lists_it(
    monkeypatch: pytest.MonkeyPatch, no_smi: None
) -> None:
    seen: list[object] = []
    procs = [Proc(111, 900 * MIB), Proc(222, 300 * MIB)]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(procs, 5000 * MIB, seen))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    memory = process_device_memory(0, pid=222)
    assert memory is not None
    assert (memory.mb, memory.scope, memory.source) == (300.0, MemoryScope.PROCESS, "nvml")
    assert seen == [0]


def test_a_process_nvml_cannot_see_gets_the_device_figure_labelled_so(
    monkeypatch: pytest.MonkeyPatch, no_smi: None
) -> None:
    procs = [Proc(111, 900 * MIB), Proc(333, None)]  # e.g. a container's own PID namespace
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(procs, 5000 * MIB, []))
    memory = process_device_memory(0, pid=333)
    assert memory is not None
    assert (memory.mb, memory.scope) == (5000.0, MemoryScope.DEVICE)


def test_no_nvml_and_no_nvidia_smi_means_no_figure(
    monkeypatch: pytest.MonkeyPatch, no_smi: None
) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert process_device_memory(0) is None


def test_nvidia_smi_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    answers = {
        "--query-gpu=memory.used": ["7000"],
        "--query-compute-apps=pid,used_memory": ["111, 900", "444, [N/A]"],
    }
    monkeypatch.setattr(gpu, "nvidia_smi", lambda *args: answers[args[1]])
    memory = process_device_memory(0, pid=111)
    assert memory is not None
    assert (memory.mb, memory.scope, memory.source) == (900.0, MemoryScope.PROCESS, "nvidia-smi")
    other = process_device_memory(0, pid=444)
    assert other is not None and (other.mb, other.scope) == (7000.0, MemoryScope.DEVICE)


def test_nvidia_ml_py_is_a_dependency() -> None:
    """Without it the NVML branch never runs and every figure is the whole device's."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[^\w.-]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert "nvidia-ml-py" in names


def test_the_installed_nvml_binding_measures_this_process(
    monkeypatch: pytest.MonkeyPatch, no_smi: None
) -> None:
    """The real ``pynvml`` module (nvidia-ml-py), its calls answered as a driver would: this
    process listed -> its own figure; not listed (another PID namespace) -> the device's."""
    import pynvml

    monkeypatch.setitem(sys.modules, "pynvml", pynvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    listed: list[object] = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: None)
    monkeypatch.setattr(pynvml, "nvmlDeviceGetHandleByIndex", lambda index: f"gpu{index}")
    monkeypatch.setattr(
        pynvml, "nvmlDeviceGetMemoryInfo", lambda h: types.SimpleNamespace(used=6000 * MIB)
    )
    monkeypatch.setattr(pynvml, "nvmlDeviceGetComputeRunningProcesses", lambda h: listed)
    listed[:] = [Proc(os.getpid() + 1, 100 * MIB), Proc(os.getpid(), 750 * MIB)]
    memory = process_device_memory(0)
    assert memory is not None
    assert (memory.mb, memory.scope, memory.source) == (750.0, MemoryScope.PROCESS, "nvml")
    listed[:] = [Proc(os.getpid() + 1, 100 * MIB)]
    memory = process_device_memory(0)
    assert memory is not None
    assert (memory.mb, memory.scope, memory.source) == (6000.0, MemoryScope.DEVICE, "nvml")
    assert memory.to_dict()["scope"] == "device"
