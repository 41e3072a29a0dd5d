"""The environment block every artifact and result file carries."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_info() -> dict[str, str] | None:
    """Name and driver of the first NVIDIA GPU, or ``None`` when there is none (no torch needed)."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = (
            subprocess.run(
                [
                    "nvidia-smi",
                    "--query-gpu=name,driver_version,memory.total",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            .stdout.strip()
            .splitlines()
        )
    except (subprocess.SubprocessError, OSError):
        return None
    if not out:
        return None
    name, driver, memory = (part.strip() for part in out[0].split(",", 2))
    return {"name": name, "driver": driver, "memory": memory}


def environment(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Machine, library versions and date, for result files."""
    env: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu": gpu_info(),
        "versions": package_versions(),
    }
    if extra:
        env |= extra
    return env
