"""The environment block every artifact and result file carries."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from resnext_deploy.machine.cpu import cpu_info
from resnext_deploy.machine.gpu import gpu_properties

TOOL_PACKAGES = (
    "resnext-deploy",
    "torch",
    "torchvision",
    "onnx",
    "onnxscript",
    "onnxruntime-gpu",
    "numpy",
)


# Benchmark reports also name the optional peer they may have measured.
BENCH_PACKAGES = (*TOOL_PACKAGES, "openvino")


def package_versions(packages: tuple[str, ...] = TOOL_PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones are left out)."""
    found = {}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def gpu_summary() -> dict[str, str] | None:
    """Name, driver and total memory of CUDA device 0, or ``None`` when there is none."""
    gpu = gpu_properties(0)
    if gpu is None:
        return None
    # nvidia-smi's "memory.total" as it prints it: whole MiB
    return {"name": gpu.name, "driver": gpu.driver, "memory": f"{int(gpu.memory_mb)} MiB"}


def environment(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Machine, library versions and date, for result files."""
    cpu = cpu_info()
    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu.model,
        "cpu_count": cpu.logical_cores,
        "gpu": gpu_summary(),
        "versions": package_versions(),
    }
    if extra:
        env |= extra
    return env
