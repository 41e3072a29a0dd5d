"""The NVIDIA GPU as the driver reports it, without torch: NVML (``pynvml``, the
``nvidia-ml-py`` package) first, ``nvidia-smi`` where NVML cannot answer. Doctor's GPU row, the
environment block and the per-process device-memory figure all ask here.

CUDA numbers the devices ``CUDA_VISIBLE_DEVICES`` lets through, NVML and ``nvidia-smi`` number
all of them: every query takes a CUDA device number and maps it (:func:`physical_index`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

MIB = 2**20

T = TypeVar("T")


@dataclass(frozen=True)
class GpuProperties:
    name: str
    memory_mb: float  # total, MiB
    compute_capability: str  # "9.0"
    driver: str
    source: str  # "nvml" or "nvidia-smi"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DeviceUsage:
    """Memory in use on one device now: per process where the driver accounts for it."""

    processes: dict[int, float]  # pid -> MiB
    used_mb: float  # the whole device
    source: str  # "nvml" or "nvidia-smi"


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


def gpu_properties(device_id: int = 0) -> GpuProperties | None:
    """Name, total memory, compute capability and driver of CUDA device ``device_id`` from NVML,
    else from ``nvidia-smi``; ``None`` when neither answers."""
    index = physical_index(device_id)
    return _nvml(index, _nvml_properties) or _smi_properties(index)


def device_usage(device_id: int = 0) -> DeviceUsage | None:
    """Memory in use on CUDA device ``device_id``, per process and in all, from NVML, else from
    ``nvidia-smi``; ``None`` when neither answers."""
    index = physical_index(device_id)
    return _nvml(index, _nvml_usage) or _smi_usage(index)


def _nvml(index: int | str, query: Callable[[Any, Any], T]) -> T | None:
    """``query(pynvml, handle)`` for the device at NVML ``index`` (or UUID); ``None`` without
    ``pynvml``, without a driver, or when any NVML call fails."""
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
        return query(pynvml, handle)
    except Exception:  # noqa: BLE001 - any NVML error means no answer from NVML
        return None
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _nvml_properties(pynvml: Any, handle: Any) -> GpuProperties:
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    return GpuProperties(
        name=_text(pynvml.nvmlDeviceGetName(handle)),
        memory_mb=pynvml.nvmlDeviceGetMemoryInfo(handle).total / MIB,
        compute_capability=f"{major}.{minor}",
        driver=_text(pynvml.nvmlSystemGetDriverVersion()),
        source="nvml",
    )


def _nvml_usage(pynvml: Any, handle: Any) -> DeviceUsage:
    used = pynvml.nvmlDeviceGetMemoryInfo(handle).used / MIB
    processes = {
        int(p.pid): p.usedGpuMemory / MIB
        for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
        if p.usedGpuMemory is not None  # None: the driver does not account per process
    }
    return DeviceUsage(processes, used, "nvml")


def _text(value: bytes | str) -> str:
    """pynvml returns bytes in older releases, str in newer ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def nvidia_smi(*args: str) -> list[str] | None:
    """The non-empty lines ``nvidia-smi args`` prints; ``None`` when it is not installed, fails
    or hangs."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return [ln.strip() for ln in done.stdout.splitlines() if ln.strip()]


def _smi_properties(index: int | str) -> GpuProperties | None:
    query = "--query-gpu=name,memory.total,compute_cap,driver_version"
    out = nvidia_smi(f"--id={index}", query, "--format=csv,noheader,nounits")
    fields = [f.strip() for f in out[0].split(",")] if out else []
    if len(fields) != 4:
        return None
    name, memory, cc, driver = fields
    try:
        memory_mb = float(memory)
    except ValueError:
        return None
    return GpuProperties(
        name=name,
        memory_mb=memory_mb,
        compute_capability=cc,
        driver=driver,
        source="nvidia-smi",
    )


def _smi_usage(index: int | str) -> DeviceUsage | None:
    select = f"--id={index}"
    used = nvidia_smi(select, "--query-gpu=memory.used", "--format=csv,noheader,nounits")
    if not used:
        return None
    apps = nvidia_smi(
        select, "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"
    )
    processes: dict[int, float] = {}
    for line in apps or []:
        pid, _, mem = line.partition(",")
        try:
            processes[int(pid)] = float(mem)
        except ValueError:  # "[N/A]": no per-process accounting
            continue
    try:
        return DeviceUsage(processes, float(used[0]), "nvidia-smi")
    except ValueError:
        return None
