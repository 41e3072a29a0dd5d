"""Device memory figures that say what they cover.

PyTorch can report its own allocator's peak (``torch.cuda.max_memory_allocated`` after a reset):
that is one backend's figure. onnxruntime has no such counter in Python, so for it the best
figure is this *process's* memory on the device from NVML (``pynvml``, the ``nvidia-ml-py``
package) or ``nvidia-smi --query-compute-apps``: it includes the CUDA context and anything else
the process holds (another runner still alive, PyTorch's cache). Where the process cannot be
found (no per-process accounting, or a container whose PIDs differ from the host's), the only
figure left is the whole device's used memory, and it is labelled so.

torch-free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

MIB = 2**20


class MemoryScope(StrEnum):
    """What a device-memory figure covers."""

    ALLOCATOR_PEAK = "allocator-peak"  # one framework's allocator, peak since a reset
    PROCESS = "process"  # this process on the device, now (context and caches included)
    DEVICE = "device"  # the whole device, now (other processes included)


@dataclass(frozen=True)
class DeviceMemory:
    mb: float
    scope: MemoryScope
    source: str  # how it was measured: "torch", "nvml", "nvidia-smi"

    def to_dict(self) -> dict[str, Any]:
        return {"mb": self.mb, "scope": self.scope.value, "source": self.source}


@dataclass(frozen=True)
class _Usage:
    processes: dict[int, float]  # pid -> MiB
    used_mb: float
    source: str


def physical_index(device_id: int) -> int | str:
    """The NVML index (or UUID) of CUDA device ``device_id``: CUDA numbers the devices that
    ``CUDA_VISIBLE_DEVICES`` lets through, NVML numbers all of them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return device_id
    entries = [e.strip() for e in visible.split(",") if e.strip()]
    if device_id >= len(entries):
        return device_id
    entry = entries[device_id]
    return int(entry) if entry.isdigit() else entry


def process_device_memory(device_id: int = 0, pid: int | None = None) -> DeviceMemory | None:
    """This process's memory on CUDA device ``device_id`` (MiB), or the device's used memory
    labelled :attr:`MemoryScope.DEVICE` when the process is not listed; ``None`` without NVML
    and without ``nvidia-smi``."""
    pid = os.getpid() if pid is None else pid
    index = physical_index(device_id)
    usage = _nvml_usage(index) or _smi_usage(index)
    if usage is None:
        return None
    if pid in usage.processes:
        return DeviceMemory(usage.processes[pid], MemoryScope.PROCESS, usage.source)
    return DeviceMemory(usage.used_mb, MemoryScope.DEVICE, usage.source)


def _nvml_usage(index: int | str) -> _Usage | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - pynvml.NVMLError: no driver here
        return None
    try:
        if isinstance(index, str):
            handle = pynvml.nvmlDeviceGetHandleByUUID(index)
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
        processes = {
            int(p.pid): p.usedGpuMemory / MIB
            for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            if p.usedGpuMemory is not None  # None: the driver does not account per process
        }
        return _Usage(processes, used, "nvml")
    except Exception:  # noqa: BLE001 - any NVML error means no figure from NVML
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _smi(*args: str) -> list[str] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]


def _smi_usage(index: int | str) -> _Usage | None:
    select = f"--id={index}"
    used = _smi(select, "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    if not used:
        return None
    apps = _smi(select, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
    processes: dict[int, float] = {}
    for line in apps or []:
        pid, _, mem = line.partition(",")
        try:
            processes[int(pid)] = float(mem)
        except ValueError:  # "[N/A]": no per-process accounting
            continue
    try:
        return _Usage(processes, float(used[0]), "nvidia-smi")
    except ValueError:
        return None
