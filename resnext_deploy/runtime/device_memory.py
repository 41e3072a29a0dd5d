"""Device memory figures that say what they cover.

PyTorch can report its own allocator's peak (``torch.cuda.max_memory_allocated`` after a reset):
that is one backend's figure. onnxruntime has no such counter in Python, so for it the best
figure is this *process's* memory on the device from NVML (``pynvml``, the ``nvidia-ml-py``
package) or ``nvidia-smi --query-compute-apps``: it includes the CUDA context and anything else
the process holds (another runner still alive, PyTorch's cache). Where the process cannot be
found (no per-process accounting, or a container whose PIDs differ from the host's), the only
figure left is the whole device's used memory, and it is labelled so. The driver is asked in
:func:`resnext_deploy.machine.gpu.device_usage`.

torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from resnext_deploy.machine.gpu import device_usage


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


def process_device_memory(device_id: int = 0, pid: int | None = None) -> DeviceMemory | None:
    """This process's memory on CUDA device ``device_id`` (MiB), or the device's used memory
    labelled :attr:`MemoryScope.DEVICE` when the process is not listed; ``None`` without NVML
    and without ``nvidia-smi``."""
    pid = os.getpid() if pid is None else pid
    usage = device_usage(device_id)
    if usage is None:
        return None
    if pid in usage.processes:
        return DeviceMemory(usage.processes[pid], MemoryScope.PROCESS, usage.source)
    return DeviceMemory(usage.used_mb, MemoryScope.DEVICE, usage.source)
