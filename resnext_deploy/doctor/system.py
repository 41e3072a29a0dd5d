"""What the machine offers: onnxruntime's build and providers, the CUDA libraries, the driver and
GPU, the CPU's instruction sets and threads. No torch: the libraries are found with ctypes, the
GPU and CPU facts come from :mod:`resnext_deploy.machine`."""

from __future__ import annotations

import ctypes
import glob
import os
from typing import Any

from resnext_deploy.doctor.packages import one_package_check
from resnext_deploy.doctor.report import Check, CheckStatus, needed
from resnext_deploy.errors import ProviderUnavailableError
from resnext_deploy.machine.cpu import CPUINFO, TRACKED_FLAGS, CpuInfo, cpu_info
from resnext_deploy.machine.gpu import gpu_properties
from resnext_deploy.runtime.cuda_libs import (
    CudaLibraryReport,
    LibraryResult,
    cuda_libraries,
    load_cuda_libraries,
)
from resnext_deploy.runtime.providers import (
    ORT_NAMES,
    Provider,
    SessionConfig,
    available_cores,
    check_provider,
    default_tensorrt_cache_dir,
)


def onnxruntime_checks(provider: Provider) -> list[Check]:
    import onnxruntime as ort

    package = getattr(ort, "package_name", None) or "onnxruntime"
    cuda = _build_cuda(ort)
    build = ort.get_build_info() if hasattr(ort, "get_build_info") else ""
    checks = [
        Check(
            section="onnxruntime",
            name="version",
            status=CheckStatus.PASS,
            detail=f"{package} {ort.__version__}"
            + (f", built for CUDA {cuda}" if cuda else ", CPU-only build"),
            data={"package": package, "version": ort.__version__, "cuda": cuda, "build": build},
        )
    ]
    checks.append(one_package_check())
    available = ort.get_available_providers()
    checks.append(
        Check(
            section="onnxruntime",
            name="providers built in",
            status=CheckStatus.PASS,
            detail=", ".join(available)
            + " (built in is not usable: see the next rows)" * (len(available) > 1),
            data={"available": available},
        )
    )
    for candidate in Provider:
        checks.append(_usable(candidate, provider, available))
    return checks


def _usable(candidate: Provider, provider: Provider, available: list[str]) -> Check:
    name = ORT_NAMES[candidate]
    row = f"{candidate.value} usable"
    if name not in available:
        status = CheckStatus.FAIL if candidate is provider else CheckStatus.SKIP
        return Check(
            section="onnxruntime",
            name=row,
            status=status,
            detail=f"{name} is not built into this onnxruntime",
        )
    try:
        check_provider(candidate)
    except ProviderUnavailableError as exc:
        status = CheckStatus.FAIL if candidate is provider else CheckStatus.SKIP
        suffix = "" if candidate is provider else _not_needed(provider)
        return Check(section="onnxruntime", name=row, status=status, detail=f"{exc}{suffix}")
    detail = (
        "always"
        if candidate is Provider.CPU
        else "a one-Conv session starts on it and the Conv is placed there"
    )
    return Check(section="onnxruntime", name=row, status=CheckStatus.PASS, detail=detail)


def cuda_library_checks(provider: Provider) -> list[Check]:
    """One row per library onnxruntime's CUDA and TensorRT providers load (CUDA runtime, cuBLASLt,
    cuBLAS, cuRAND, NVRTC, cuDNN, TensorRT and its ONNX parser): where it was found and loaded
    from, as :func:`create_session` finds them, or why not; then a row naming the folders looked
    in and the libraries missing."""
    import onnxruntime as ort

    cuda = _build_cuda(ort)
    if not cuda:
        return [
            Check(
                section="cuda",
                name="libraries",
                status=needed(provider),
                detail="this onnxruntime is a CPU-only build: no CUDA libraries are used",
            )
        ]
    report = load_cuda_libraries(cuda_libraries(cuda, tensorrt=True))
    rows = [_library(result, provider) for result in report.libraries]
    return [*rows, _summary(report, provider)]


def _summary(report: CudaLibraryReport, provider: Provider) -> Check:
    """What was found, what ``provider`` lacks (TensorRT's libraries count for TensorRT only)
    and where the wheels were looked for."""
    missing = [r for r in report.missing if provider is Provider.TENSORRT or not r.library.tensorrt]
    found = ", ".join(r.library.label for r in report.libraries if r.found) or "none"
    lacking = ", ".join(f"{r.library.label} ({r.library.soname})" for r in missing) or "none"
    folders = "; ".join(report.searched) or "none on sys.path"
    return Check(
        section="cuda",
        name="libraries",
        status=needed(provider) if missing else CheckStatus.PASS,
        detail=f"found: {found}; missing: {lacking}; looked for in the wheel folders {folders}, "
        "then on the loader path",
        data=report.to_dict(),
    )


def _library(result: LibraryResult, provider: Provider) -> Check:
    library = result.library
    if result.path is None:
        if not library.required:
            status, why = CheckStatus.SKIP, " (optional: the provider starts without it)"
        elif library.tensorrt and provider is not Provider.TENSORRT:
            status, why = CheckStatus.SKIP, _not_needed(provider)
        else:
            status = needed(provider)
            why = "" if status is CheckStatus.FAIL else _not_needed(provider)
        return Check(
            section="cuda",
            name=library.label,
            status=status,
            detail=f"not found: {result.error}{why}",
            data=result.to_dict(),
        )
    version = _library_version(library.label, result.path)
    detail = f"{library.soname}" + (f" {version}" if version else "")
    detail += f" at {result.path} ({result.source.value if result.source else '?'})"
    return Check(
        section="cuda",
        name=library.label,
        status=CheckStatus.PASS,
        detail=detail,
        data={**result.to_dict(), "version": version},
    )


def _library_version(label: str, path: str) -> str | None:
    probe = {
        "CUDA runtime": _cudart_version,
        "cuBLAS": _cublas_version,
        "cuDNN": _cudnn_version,
    }.get(label)
    if probe is None:
        return None
    try:
        return probe(ctypes.CDLL(path))
    except (OSError, AttributeError):  # loaded a moment ago; a symbol may be missing
        return None


def _cudart_version(lib: Any) -> str | None:
    value = ctypes.c_int()
    if lib.cudaRuntimeGetVersion(ctypes.byref(value)) != 0:
        return None
    return f"{value.value // 1000}.{value.value % 1000 // 10}"


def _cublas_version(lib: Any) -> str | None:
    parts = []
    for prop in range(3):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
        value = ctypes.c_int()
        if lib.cublasGetProperty(prop, ctypes.byref(value)) != 0:
            return None
        parts.append(str(value.value))
    return ".".join(parts)


def _cudnn_version(lib: Any) -> str | None:
    lib.cudnnGetVersion.restype = ctypes.c_size_t
    v = int(lib.cudnnGetVersion())
    return f"{v // 10000}.{v % 10000 // 100}.{v % 100}"  # cuDNN 9: major*10000+minor*100+patch


def driver_checks(provider: Provider, device_id: int = 0) -> list[Check]:
    """The NVIDIA driver (``libcuda.so.1``, ``/dev/nvidia*``) and the GPU: name, memory, compute
    capability."""
    import onnxruntime as ort

    nodes = sorted(glob.glob("/dev/nvidia[0-9]*"))
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        status = needed(provider)
        why = "" if status is CheckStatus.FAIL else _not_needed(provider)
        return [
            Check(
                section="gpu",
                name="driver",
                status=status,
                detail=f"no NVIDIA driver: {exc}{why}",
                data={"device_nodes": nodes},
            ),
            Check(
                section="gpu",
                name="GPU",
                status=status,
                detail="no GPU can be used without the driver" + why,
            ),
        ]
    value = ctypes.c_int()
    supported = None
    if libcuda.cuDriverGetVersion(ctypes.byref(value)) == 0:
        supported = f"{value.value // 1000}.{value.value % 1000 // 10}"
    build = _build_cuda(ort)
    status = CheckStatus.PASS
    detail = f"libcuda.so.1 loads, supports CUDA up to {supported or '?'}"
    detail += f"; device nodes: {', '.join(nodes) or 'none'}"
    if supported and build and int(supported.split(".")[0]) < int(build.split(".")[0]):
        status = needed(provider)
        detail += f"; onnxruntime is built for CUDA {build}: update the driver"
    if not nodes:
        status = needed(provider)
        detail += " (no /dev/nvidia<N>: no GPU visible to this process)"
    checks = [
        Check(
            section="gpu",
            name="driver",
            status=status,
            detail=detail,
            data={"cuda_supported": supported, "device_nodes": nodes},
        )
    ]
    checks.append(_gpu(provider, device_id))
    return checks


def _gpu(provider: Provider, device_id: int) -> Check:
    gpu = gpu_properties(device_id)
    if gpu is None:
        return Check(
            section="gpu",
            name="GPU",
            status=needed(provider),
            detail="NVML (pynvml) and nvidia-smi cannot report a GPU",
        )
    cc = gpu.compute_capability
    notes = ""
    if cc:
        major = int(cc.split(".")[0])
        notes = (
            "; fp16 and TF32 tensor cores"
            if major >= 8
            else "; fp16 tensor cores, no TF32"
            if major >= 7
            else "; no tensor cores"
        )
    return Check(
        section="gpu",
        name="GPU",
        status=CheckStatus.PASS,
        detail=f"{gpu.name}, {gpu.memory_mb:.0f} MiB, compute capability {cc}{notes} "
        f"(driver {gpu.driver}, via {gpu.source})",
        data=gpu.to_dict(),
    )


def tensorrt_cache_check(provider: Provider) -> Check:
    folder = default_tensorrt_cache_dir()
    if provider is not Provider.TENSORRT:
        return Check(
            section="gpu",
            name="TensorRT cache",
            status=CheckStatus.SKIP,
            detail=f"{folder} (only TensorRT uses it)",
        )
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    writable = os.access(probe, os.W_OK)
    return Check(
        section="gpu",
        name="TensorRT cache",
        status=CheckStatus.PASS if writable else CheckStatus.FAIL,
        detail=f"timing caches go to {folder}, engines to one sub-folder of it per model "
        "sha256 and engine options"
        + ("" if writable else f": {probe} is not writable, so every session rebuilds"),
        data={
            "path": str(folder),
            "engines": "<path>/<model sha256[:16]>-<engine options sha256[:12]>",
        },
    )


def cpu_checks(path: str = str(CPUINFO)) -> list[Check]:
    """The CPU's instruction sets (from ``path``), what they mean for int8 and bf16, and
    threads."""
    cpu = cpu_info(path)
    if not cpu.flags:
        return [
            Check(
                section="cpu",
                name="ISA",
                status=CheckStatus.SKIP,
                detail="no x86 flags in /proc/cpuinfo: instruction sets unknown",
                data=_cpu_data(cpu),
            ),
            _threads_check(cpu),
        ]
    return [
        _isa_check(cpu),
        Check(section="cpu", name="int8", status=CheckStatus.PASS, detail=_int8_note(cpu)),
        Check(section="cpu", name="bf16", status=CheckStatus.PASS, detail=_bf16_note(cpu)),
        _threads_check(cpu),
    ]


def _cpu_data(cpu: CpuInfo) -> dict[str, Any]:
    return {
        "vendor": cpu.vendor,
        "model": cpu.model,
        "isa": cpu.tracked,
        "has_flags": bool(cpu.flags),
    }


def _isa_check(cpu: CpuInfo) -> Check:
    absent = [label for label in TRACKED_FLAGS.values() if label not in cpu.tracked]
    return Check(
        section="cpu",
        name="ISA",
        status=CheckStatus.PASS,
        detail=f"{cpu.model or '?'} ({cpu.vendor or '?'}): "
        f"{', '.join(cpu.tracked) or 'none of the tracked extensions'}"
        + (f"; not present: {', '.join(absent)}" if absent else ""),
        data=_cpu_data(cpu),
    )


def _int8_note(cpu: CpuInfo) -> str:
    if cpu.int8_accelerated:
        return (
            "int8 dot products in one instruction (VNNI/AMX): onnxruntime's int8 kernels use "
            "them, so the int8 variant is where this CPU gains most over fp32"
        )
    if cpu.avx2:
        return (
            "no VNNI or AMX: int8 runs on AVX2 multiply-add sequences (uint8 activations x int8 "
            "weights), so the int8 variant gains less over fp32 here; measure it with bench"
        )
    return "no AVX2: int8 and fp32 both run on SSE-level kernels"


def _bf16_note(cpu: CpuInfo) -> str:
    if cpu.bf16:
        return (
            "bf16 in hardware: OpenVINO picks bf16 by default on such CPUs; give it an f32 "
            "precision hint to compare like with like"
        )
    return "no bf16 hardware: bf16 would be emulated, slower than fp32; keep fp32 or int8"


def _threads_check(cpu: CpuInfo) -> Check:
    logical = cpu.logical_cores
    usable = available_cores()
    session = SessionConfig().threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    detail = (
        f"{logical} logical CPUs, {usable} usable by this process; onnxruntime sessions use "
        f"{session} intra-op threads unless told otherwise"
        + (f"; OMP_NUM_THREADS={omp}" if omp else "")
    )
    return Check(
        section="cpu",
        name="threads",
        status=CheckStatus.PASS,
        detail=detail,
        data={"logical": logical, "usable": usable, "session_threads": session, "omp": omp},
    )


def _build_cuda(ort: Any) -> str:
    """The CUDA version onnxruntime was built for ("" for a CPU-only build)."""
    return str(getattr(ort, "cuda_version", "") or "")


def _not_needed(provider: Provider) -> str:
    return f" (not needed for the {provider.value} provider)"
