"""What the machine offers: onnxruntime's build and providers, the CUDA libraries, the driver and
GPU, the CPU's instruction sets and threads. No torch: found with ctypes, NVML (``pynvml``,
optional), ``nvidia-smi`` and ``/proc``."""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import subprocess
from typing import Any

from resnext_deploy.doctor.packages import one_package_check
from resnext_deploy.doctor.report import Check, CheckStatus, needed
from resnext_deploy.errors import ProviderUnavailableError
from resnext_deploy.runtime.cuda_libs import (
    CudaLibraryReport,
    LibraryResult,
    cuda_libraries,
    load_cuda_libraries,
)
from resnext_deploy.runtime.device_memory import physical_index
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
    cc = gpu.get("compute_capability")
    notes = ""
    if cc:
        major = int(str(cc).split(".")[0])
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
        detail=f"{gpu['name']}, {gpu['memory_mb']:.0f} MiB, compute capability {cc}{notes} "
        f"(driver {gpu['driver']}, via {gpu['source']})",
        data=gpu,
    )


def gpu_properties(device_id: int = 0) -> dict[str, Any] | None:
    """Name, total memory (MiB), compute capability and driver of CUDA device ``device_id``
    from NVML, else from ``nvidia-smi``; ``None`` when neither answers."""
    index = physical_index(device_id)
    try:
        import pynvml
    except ImportError:
        pynvml = None
    if pynvml is not None:
        try:
            pynvml.nvmlInit()
            try:
                handle = (
                    pynvml.nvmlDeviceGetHandleByUUID(index)
                    if isinstance(index, str)
                    else pynvml.nvmlDeviceGetHandleByIndex(index)
                )
                name = pynvml.nvmlDeviceGetName(handle)
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
                driver = pynvml.nvmlSystemGetDriverVersion()
                return {
                    "name": name.decode() if isinstance(name, bytes) else str(name),
                    "memory_mb": pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20,
                    "compute_capability": f"{major}.{minor}",
                    "driver": driver.decode() if isinstance(driver, bytes) else str(driver),
                    "source": "nvml",
                }
            finally:
                pynvml.nvmlShutdown()
        except Exception:  # noqa: BLE001 - pynvml.NVMLError: fall through to nvidia-smi
            pass
    return _smi_gpu(index)


def _smi_gpu(index: int | str) -> dict[str, Any] | None:
    if shutil.which("nvidia-smi") is None:
        return None
    query = "--query-gpu=name,memory.total,compute_cap,driver_version"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--id={index}", query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return None
    fields = [f.strip() for f in out.splitlines()[0].split(",")] if out else []
    if len(fields) != 4:
        return None
    name, memory, cc, driver = fields
    try:
        memory_mb = float(memory)
    except ValueError:
        return None
    return {
        "name": name,
        "memory_mb": memory_mb,
        "compute_capability": cc,
        "driver": driver,
        "source": "nvidia-smi",
    }


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


# x86 flags in /proc/cpuinfo that decide how int8 and bf16 run.
ISA_FLAGS = {
    "avx2": "AVX2",
    "fma": "FMA",
    "avx512f": "AVX-512",
    "avx512_vnni": "AVX512-VNNI",
    "avx_vnni": "AVX-VNNI",
    "avx512_bf16": "AVX512-BF16",
    "amx_tile": "AMX",
    "amx_int8": "AMX-INT8",
    "amx_bf16": "AMX-BF16",
}


def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, Any]:
    """Vendor, model and the :data:`ISA_FLAGS` present, from the first CPU in ``path``."""
    vendor = model = ""
    flags: set[str] = set()
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "model name" and not model:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {
        "vendor": vendor,
        "model": model,
        "isa": [label for flag, label in ISA_FLAGS.items() if flag in flags],
        "has_flags": bool(flags),
    }


def cpu_checks(path: str = "/proc/cpuinfo") -> list[Check]:
    """The CPU's instruction sets, what they mean for int8 and bf16, and threads."""
    info = cpu_info(path)
    isa = set(info["isa"])
    if not info["has_flags"]:
        return [
            Check(
                section="cpu",
                name="ISA",
                status=CheckStatus.SKIP,
                detail="no x86 flags in /proc/cpuinfo: instruction sets unknown",
                data=info,
            ),
            _threads_check(),
        ]
    absent = [label for label in ISA_FLAGS.values() if label not in isa]
    cpu = Check(
        section="cpu",
        name="ISA",
        status=CheckStatus.PASS,
        detail=f"{info['model'] or '?'} ({info['vendor'] or '?'}): "
        f"{', '.join(info['isa']) or 'none of the tracked extensions'}"
        + (f"; not present: {', '.join(absent)}" if absent else ""),
        data=info,
    )
    if isa & {"AVX512-VNNI", "AVX-VNNI", "AMX-INT8"}:
        int8 = (
            "int8 dot products in one instruction (VNNI/AMX): onnxruntime's int8 kernels use "
            "them, so the int8 variant is where this CPU gains most over fp32"
        )
    elif "AVX2" in isa:
        int8 = (
            "no VNNI or AMX: int8 runs on AVX2 multiply-add sequences (uint8 activations x int8 "
            "weights), so the int8 variant gains less over fp32 here; measure it with bench"
        )
    else:
        int8 = "no AVX2: int8 and fp32 both run on SSE-level kernels"
    if isa & {"AVX512-BF16", "AMX-BF16"}:
        bf16 = (
            "bf16 in hardware: OpenVINO picks bf16 by default on such CPUs; give it an f32 "
            "precision hint to compare like with like"
        )
    else:
        bf16 = "no bf16 hardware: bf16 would be emulated, slower than fp32; keep fp32 or int8"
    return [
        cpu,
        Check(section="cpu", name="int8", status=CheckStatus.PASS, detail=int8),
        Check(section="cpu", name="bf16", status=CheckStatus.PASS, detail=bf16),
        _threads_check(),
    ]


def _threads_check() -> Check:
    logical = os.cpu_count() or 1
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
