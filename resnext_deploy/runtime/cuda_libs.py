"""CUDA's libraries, found the way users have them and loaded before onnxruntime needs them.

onnxruntime-gpu's ``preload_dlls()`` looks only in ``../nvidia`` beside the onnxruntime package,
and its CUDA provider library has no RUNPATH: where onnxruntime is installed apart from the
nvidia-* wheels (``pip --target``, a container layer, a user site), a command that never imports
torch cannot load cuBLASLt or cuRAND. Here each library is looked for in this order: already
mapped into this process (torch imported first), the wheels under any ``sys.path`` entry
(``nvidia/<package>/lib``, the namespace package the nvidia-* wheels share, and TensorRT's
``tensorrt_libs``), then the dynamic loader's own search (``LD_LIBRARY_PATH``, ldconfig's cache).
Each one found is loaded with ``RTLD_GLOBAL`` in dependency order, so that the provider's own
``dlopen`` finds it by soname. Linux sonames; ctypes only, no torch and no onnxruntime.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

CUDNN_MAJOR = 9  # what onnxruntime-gpu 1.31 is built with
TENSORRT_MAJOR = 10


class LibrarySource(StrEnum):
    """Where a library was found."""

    WHEEL = "python package"  # an nvidia-* or tensorrt wheel under a sys.path entry
    LOADER = "loader path"  # LD_LIBRARY_PATH, ldconfig's cache, the system folders
    PROCESS = "already loaded"  # mapped into this process from elsewhere (e.g. by torch)


@dataclass(frozen=True, kw_only=True)
class CudaLibrary:
    """One library onnxruntime's GPU providers load. ``required``: the provider cannot start
    without it (the others serve some kernels only); ``tensorrt``: only TensorRT needs it."""

    label: str
    soname: str
    required: bool = True
    tensorrt: bool = False


@dataclass(frozen=True, kw_only=True)
class LibraryResult:
    """Where ``library`` was found and loaded from, or why it was not (``error``)."""

    library: CudaLibrary
    path: str | None = None
    source: LibrarySource | None = None
    error: str | None = None

    @property
    def found(self) -> bool:
        return self.path is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.library.label,
            "soname": self.library.soname,
            "required": self.library.required,
            "path": self.path,
            "source": self.source.value if self.source else None,
            "error": self.error,
        }


@dataclass(frozen=True, kw_only=True)
class CudaLibraryReport:
    """Every library looked for, in load order; ``searched``: the wheel folders looked in."""

    libraries: tuple[LibraryResult, ...]
    searched: tuple[str, ...]

    @property
    def missing(self) -> tuple[LibraryResult, ...]:
        """The required libraries that were not found (or did not load)."""
        return tuple(r for r in self.libraries if r.library.required and not r.found)

    def missing_text(self) -> str:
        """``""`` when nothing required is missing, else a sentence naming what is."""
        if not self.missing:
            return ""
        names = ", ".join(f"{r.library.label} ({r.library.soname})" for r in self.missing)
        return (
            f"; libraries not found: {names} (looked for in the nvidia-* and tensorrt wheels "
            "on sys.path and on the loader path; `resnext-deploy doctor` lists each)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "libraries": [r.to_dict() for r in self.libraries],
            "searched": list(self.searched),
        }


def cuda_libraries(cuda_version: str, *, tensorrt: bool = False) -> tuple[CudaLibrary, ...]:
    """The libraries an onnxruntime-gpu built for CUDA ``cuda_version`` (e.g. ``"13.0"``) loads,
    dependencies first; TensorRT's too when ``tensorrt``."""
    major = cuda_version.split(".")[0]
    libraries = [
        CudaLibrary(label="CUDA runtime", soname=f"libcudart.so.{major}"),
        CudaLibrary(label="cuBLASLt", soname=f"libcublasLt.so.{major}"),
        CudaLibrary(label="cuBLAS", soname=f"libcublas.so.{major}"),  # links cuBLASLt
        CudaLibrary(label="cuRAND", soname="libcurand.so.10"),  # one soname for CUDA 11 to 13
        # cuDNN's runtime-compiled engines open NVRTC themselves; its wheel may live elsewhere.
        CudaLibrary(label="NVRTC", soname=f"libnvrtc.so.{major}", required=False),
        CudaLibrary(label="cuDNN", soname=f"libcudnn.so.{CUDNN_MAJOR}"),
    ]
    if tensorrt:
        trt = TENSORRT_MAJOR
        libraries += [
            CudaLibrary(label="TensorRT", soname=f"libnvinfer.so.{trt}", tensorrt=True),
            CudaLibrary(
                label="TensorRT plugins",
                soname=f"libnvinfer_plugin.so.{trt}",
                required=False,
                tensorrt=True,
            ),
            CudaLibrary(
                label="TensorRT ONNX parser", soname=f"libnvonnxparser.so.{trt}", tensorrt=True
            ),
        ]
    return tuple(libraries)


def wheel_folders(search_path: Sequence[str] | None = None) -> tuple[Path, ...]:
    """The library folders of the nvidia-* wheels (``nvidia/*/lib``) and TensorRT's wheel
    (``tensorrt_libs``) under each entry of ``search_path`` (default ``sys.path``), in path
    order, each once. The empty entry (the current folder) is left out: libraries are not taken
    from wherever a command happens to run."""
    folders: dict[Path, None] = {}
    for entry in sys.path if search_path is None else search_path:
        if not entry or not os.path.isdir(entry):  # "" or a zip file
            continue
        root = Path(entry)
        candidates = [*sorted((root / "nvidia").glob("*/lib")), root / "tensorrt_libs"]
        for folder in candidates:
            if folder.is_dir():
                folders.setdefault(folder.resolve(), None)
    return tuple(folders)


def load_cuda_libraries(
    libraries: Sequence[CudaLibrary], search_path: Sequence[str] | None = None
) -> CudaLibraryReport:
    """Find and load each of ``libraries`` in order (see the module's docstring); never raises:
    what is missing is in the report."""
    folders = wheel_folders(search_path)
    return CudaLibraryReport(
        libraries=tuple(_load(library, folders) for library in libraries),
        searched=tuple(str(f) for f in folders),
    )


def _load(library: CudaLibrary, folders: Sequence[Path]) -> LibraryResult:
    mapped = mapped_path(library.soname)
    if mapped is not None:  # by torch, or by an earlier session: say from where it came
        wheel = Path(mapped).parent in folders
        source = LibrarySource.WHEEL if wheel else LibrarySource.PROCESS
        return LibraryResult(library=library, path=mapped, source=source)
    errors: list[str] = []
    for folder in folders:
        candidate = folder / library.soname
        if not candidate.is_file():
            continue
        try:
            ctypes.CDLL(str(candidate), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:  # a broken or wrong-architecture copy: try the next one
            errors.append(str(exc))
            continue
        return LibraryResult(library=library, path=str(candidate), source=LibrarySource.WHEEL)
    try:
        ctypes.CDLL(library.soname, mode=ctypes.RTLD_GLOBAL)
    except OSError as exc:
        errors.append(str(exc))
        return LibraryResult(library=library, error="; ".join(errors))
    path = mapped_path(library.soname) or library.soname
    return LibraryResult(library=library, path=path, source=LibrarySource.LOADER)


def mapped_path(soname: str) -> str | None:
    """The file of the library with ``soname`` mapped into this process (a system install's
    file may be ``libcublasLt.so.13.1.0.3``), or ``None``."""
    for name, path in loaded_libraries().items():
        if name == soname or name.startswith(soname + "."):
            return path
    return None


def loaded_libraries() -> dict[str, str]:
    """File name -> path of the shared libraries mapped into this process (Linux's
    ``/proc/self/maps``; empty elsewhere)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            for line in maps:
                path = line.rsplit(maxsplit=1)[-1]
                if ".so" in path and path.startswith("/"):
                    found.setdefault(os.path.basename(path), path)
    except OSError:
        pass
    return found
