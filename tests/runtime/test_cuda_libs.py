"""CUDA's libraries are found where users have them: the nvidia-* wheels under any sys.path entry
(not only beside onnxruntime), then the loader path; each is loaded by full path, in order."""

from __future__ import annotations

import _ctypes
import ctypes
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from resnext_deploy.runtime.cuda_libs import (
    CudaLibrary,
    LibrarySource,
    cuda_libraries,
    load_cuda_libraries,
    mapped_path,
    wheel_folders,
)
from tests.conftest import has_cuda
from tests.site_layouts import onnxruntime_apart, run_torch_free


def wheel(site: Path, package: str, soname: str, content: bytes = b"not a library") -> Path:
    lib = site / "nvidia" / package / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / soname).write_bytes(content)
    return lib.resolve()


def test_wheel_folders_are_found_under_every_sys_path_entry(tmp_path: Path) -> None:
    first, second = tmp_path / "target", tmp_path / "site-packages"
    curand = wheel(second, "curand", "libcurand.so.10")
    cu13 = wheel(second, "cu13", "libcublasLt.so.13")
    (first / "tensorrt_libs").mkdir(parents=True)
    (first / "tensorrt_libs" / "libnvonnxparser.so.10").write_bytes(b"x")
    (tmp_path / "not-a-folder.zip").write_bytes(b"")
    path = ["", str(tmp_path / "not-a-folder.zip"), str(first), str(second), str(second)]
    assert wheel_folders(path) == ((first / "tensorrt_libs").resolve(), cu13, curand)


def test_the_order_puts_dependencies_first_and_names_curand_and_the_parser() -> None:
    sonames = [lib.soname for lib in cuda_libraries("13.0", tensorrt=True)]
    assert sonames.index("libcublasLt.so.13") < sonames.index("libcublas.so.13")
    assert sonames.index("libnvinfer.so.10") < sonames.index("libnvonnxparser.so.10")
    assert {"libcurand.so.10", "libcudnn.so.9", "libcudart.so.13"} <= set(sonames)
    assert not any("nvinfer" in s for s in (lib.soname for lib in cuda_libraries("13.0")))


def test_a_library_in_a_wheel_is_loaded_from_there(tmp_path: Path) -> None:
    """A real shared object (a copy of ctypes' own extension) under a new soname."""
    soname = "libresnext_deploy_probe.so.1"
    folder = wheel(tmp_path, "probe", soname, Path(_ctypes.__file__).read_bytes())
    assert mapped_path(soname) is None
    report = load_cuda_libraries([CudaLibrary(label="probe", soname=soname)], [str(tmp_path)])
    (result,) = report.libraries
    assert (result.path, result.source) == (str(folder / soname), LibrarySource.WHEEL)
    assert mapped_path(soname) == str(folder / soname)
    assert not report.missing and report.missing_text() == ""
    again = load_cuda_libraries([CudaLibrary(label="probe", soname=soname)], [str(tmp_path)])
    assert again.libraries[0].source is LibrarySource.WHEEL  # mapped, and from that wheel


def test_a_broken_copy_and_a_missing_library_are_reported_not_raised(tmp_path: Path) -> None:
    broken = CudaLibrary(label="broken", soname="libresnext_deploy_broken.so.1")
    absent = CudaLibrary(label="absent", soname="libresnext_deploy_absent.so.1", required=False)
    folder = wheel(tmp_path, "broken", broken.soname)
    report = load_cuda_libraries([broken, absent], [str(tmp_path)])
    first, second = report.libraries
    assert not first.found and str(folder / broken.soname) in (first.error or "")
    assert absent.soname in (second.error or "") and not second.found
    assert report.missing == (first,)  # the optional one is not "missing"
    assert "broken (libresnext_deploy_broken.so.1)" in report.missing_text()
    assert str(folder) in report.searched


def test_cuda_libraries_are_found_when_onnxruntime_is_installed_apart(tmp_path: Path) -> None:
    """onnxruntime imported from a folder without ``../nvidia`` (a ``--target`` install): the
    session must fail on the missing driver alone, with cuBLASLt, cuRAND and cuDNN loaded from
    the nvidia-* wheels further down sys.path. onnxruntime's own ``preload_dlls`` misses them."""
    wheels = wheel_folders()
    cuda_13 = str(ort.cuda_version).split(".")[0] == "13"
    if not cuda_13 or not any((f / "libcublasLt.so.13").is_file() for f in wheels):
        pytest.skip("no nvidia-* CUDA 13 wheels on sys.path to find")
    site = onnxruntime_apart(tmp_path / "target")
    code = """
import json, onnxruntime
from pathlib import Path
from resnext_deploy.runtime.cuda_libs import mapped_path
from resnext_deploy.runtime.providers import Provider, check_provider
beside = Path(onnxruntime.__file__).parent.parent
error = None
try:
    check_provider(Provider.CUDA)
except Exception as exc:
    error = str(exc)
names = ("libcublasLt.so.13", "libcurand.so.10", "libcudnn.so.9")
print(json.dumps({"beside": str(beside), "nvidia_beside": (beside / "nvidia").exists(),
                  "error": error, "mapped": {n: mapped_path(n) for n in names}}))
"""
    seen = run_torch_free(code, site)
    assert seen["beside"] == str(site) and not seen["nvidia_beside"]  # the layout under test
    for soname, path in seen["mapped"].items():
        assert path is not None and Path(path).parent in wheels, (soname, seen)
    if has_cuda():
        assert seen["error"] is None
    else:
        assert "libcuda.so.1" in seen["error"]  # the driver, and nothing else, is missing
        assert "libcublasLt" not in seen["error"] and "libcurand" not in seen["error"]


def test_a_library_loaded_from_elsewhere_is_reported_where_it_is(tmp_path: Path) -> None:
    soname = "libresnext_deploy_elsewhere.so.1"
    other = tmp_path.resolve() / "elsewhere"
    other.mkdir()
    shutil.copy(_ctypes.__file__, other / soname)
    ctypes.CDLL(str(other / soname))
    report = load_cuda_libraries([CudaLibrary(label="x", soname=soname)], [str(tmp_path)])
    (result,) = report.libraries
    assert (result.path, result.source) == (str(other / soname), LibrarySource.PROCESS)
