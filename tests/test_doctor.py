"""``resnext-deploy doctor``: passes here on the CPU, fails with the reason for a GPU provider
this machine cannot run, and ``--json`` is the only thing on stdout."""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from resnext_deploy.cli import app
from resnext_deploy.doctor import CheckStatus, run_doctor, system
from resnext_deploy.doctor.packages import one_package_check
from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import Provider
from tests.conftest import has_cuda
from tests.site_layouts import fake_distribution, onnxruntime_apart, run_torch_free

ROOT = Path(__file__).resolve().parents[1]


def doctor(*args: str, block_torch: bool = False) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh process (file-descriptor level output is what is being checked)."""
    block = "sys.modules['torch'] = None; " if block_torch else ""
    code = (
        f"import sys; {block}from resnext_deploy.cli import main; "
        f"sys.argv = ['resnext-deploy', 'doctor', *{list(args)!r}]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def rows(report: dict) -> dict[str, dict]:
    return {f"{c['section']}/{c['name']}": c for c in report["checks"]}


def test_cpu_passes_here_with_json_alone_on_stdout_and_no_torch() -> None:
    done = doctor("--provider", "cpu", "--json", block_torch=True)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # nothing but the JSON on stdout
    assert report["passed"] and report["provider"] == "cpu"
    checks = rows(report)
    for name in ("session", "placement", "IO binding", "fp16 variant"):
        assert checks[f"smoke/{name}"]["status"] == "PASS", checks[f"smoke/{name}"]
    assert checks["smoke/CUDA graph"]["status"] == "SKIP"
    assert checks["smoke/placement"]["data"]["placement"]["convs"] == 4
    assert checks["onnxruntime/version"]["data"]["version"] == ort.__version__


def test_cuda_without_a_driver_fails_with_the_reason() -> None:
    if has_cuda():
        pytest.skip("this machine has an NVIDIA GPU; the no-driver failure cannot be seen")
    done = doctor("--provider", "cuda", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    checks = rows(report)
    assert not report["passed"]
    assert checks["gpu/driver"]["status"] == "FAIL"
    assert "no NVIDIA driver" in checks["gpu/driver"]["detail"]
    assert "libcuda.so.1" in checks["smoke/session"]["detail"]
    assert checks["smoke/session"]["status"] == "FAIL"
    assert checks["smoke/IO binding"]["status"] == "SKIP"
    assert "[E:onnxruntime" not in done.stdout and "EP Error" not in done.stdout


def test_tensorrt_failure_leaks_nothing_into_stdout() -> None:
    """TensorRT's failure makes onnxruntime log natively and, with its fallback on, print."""
    try:
        ctypes.CDLL("libnvinfer.so.10")
        pytest.skip("TensorRT's libraries load here")
    except OSError:
        pass
    done = doctor("--provider", "tensorrt", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert "libnvinfer" in rows(report)["smoke/session"]["detail"]


def test_the_table_names_each_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    if has_cuda():
        pytest.skip("this machine has an NVIDIA GPU")
    result = CliRunner().invoke(app, ["doctor", "--provider", "cuda"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "smoke/session" in result.output


def test_a_wrong_io_bound_result_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """The IO-binding row compares with a plain onnxruntime session, so it can fail."""
    real_bind = OrtRunner.bind
    monkeypatch.setattr(OrtRunner, "bind", lambda self, batch: real_bind(self, batch * 0.5))
    report = run_doctor(Provider.CPU)
    row = next(c for c in report.checks if c.name == "IO binding")
    assert row.status is CheckStatus.FAIL and not report.passed


def test_an_fp16_variant_off_by_five_percent_fails_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fp16 row holds the converted model to fp16's tolerance against the fp32 CPU
    reference, so a conversion that is 5% off fails it (top-1 and cosine unchanged)."""
    from resnext_deploy.export import variants
    from tests.test_parity import scale_output

    real_export = variants.export_fp16

    def five_percent_off(src: Path, dst: Path) -> None:
        real_export(src, dst)
        scale_output(dst, 1.05)

    monkeypatch.setattr(variants, "export_fp16", five_percent_off)
    report = run_doctor(Provider.CPU)
    row = next(c for c in report.checks if c.name == "fp16 variant")
    assert row.status is CheckStatus.FAIL and not report.passed
    assert 0.04 < row.data["max_rel"] < 0.06 and "> 0.01" in row.detail


def test_the_tiny_model_is_a_resnext() -> None:
    model = onnx.load_model_from_string(tiny_resnext_onnx())
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    groups = [a.i for n in convs for a in n.attribute if a.name == "group"]
    assert len(convs) == 4 and 4 in groups
    assert {"Add", "GlobalAveragePool", "Gemm"} <= {n.op_type for n in model.graph.node}
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 16, 16), dtype=np.float32)
    (out,) = session.run(None, {"input": x})
    assert out.shape == (3, 5) and np.isfinite(out).all() and out.std() > 0


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16

processor\t: 1
flags\t\t: fpu
"""


def test_cpu_features_are_read_and_explained(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    checks = {c.name: c for c in system.cpu_checks(str(path))}
    assert "AMX-BF16" in checks["ISA"].detail and "GenuineIntel" in checks["ISA"].detail
    assert "VNNI/AMX" in checks["int8"].detail
    assert "bf16 in hardware" in checks["bf16"].detail
    path.write_text("vendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma\n")
    checks = {c.name: c for c in system.cpu_checks(str(path))}
    assert "no VNNI" in checks["int8"].detail and "no bf16" in checks["bf16"].detail
    assert "AVX-512" in checks["ISA"].detail.split("not present:")[1]


def test_doctor_names_each_cuda_library_and_where_it_was_found(tmp_path: Path) -> None:
    """onnxruntime installed apart from the nvidia-* wheels (``pip --target``), torch never
    imported: the libraries are still found in the wheels further down sys.path, and each row
    says where; TensorRT's (its ONNX parser included) are named as missing."""
    from resnext_deploy.runtime.cuda_libs import wheel_folders

    wheels = [str(f) for f in wheel_folders()]
    if not any(Path(f, "libcurand.so.10").is_file() for f in wheels):
        pytest.skip("no nvidia-* wheels with cuRAND on sys.path to find")
    site = onnxruntime_apart(tmp_path / "target")
    code = (
        "import json; from resnext_deploy.doctor import system; "
        "from resnext_deploy.runtime.providers import Provider; "
        "print(json.dumps([c.to_dict() for c in system.cuda_library_checks(Provider.CUDA)]))"
    )
    checks = {c["name"]: c for c in run_torch_free(f"import sys\n{code}", site)}
    for label in ("CUDA runtime", "cuBLASLt", "cuBLAS", "cuRAND", "cuDNN"):
        assert checks[label]["status"] == "PASS", checks[label]
        assert str(Path(checks[label]["data"]["path"]).parent) in wheels
        assert checks[label]["data"]["source"] == "python package"
        assert checks[label]["data"]["path"] in checks[label]["detail"]
    parser = checks["TensorRT ONNX parser"]
    if parser["status"] != "PASS":
        assert parser["status"] == "SKIP" and "libnvonnxparser.so.10" in parser["detail"]
    summary = checks["libraries"]
    assert summary["status"] == "PASS" and summary["data"]["searched"] == wheels


def test_an_onnxruntime_shadowed_elsewhere_on_the_path_passes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A CPU onnxruntime in a folder later on sys.path (a system site-packages) is harmless."""
    other = tmp_path / "system-site-packages"
    fake_distribution(other, "onnxruntime", "1.30.0")
    monkeypatch.setattr(sys, "path", [*sys.path, str(other)])
    row = next(c for c in system.onnxruntime_checks(Provider.CPU) if c.name == "one package")
    assert row.status is CheckStatus.PASS, row.detail
    imported = os.path.realpath(Path(ort.__file__).parent.parent)
    assert f"imported: {ort.package_name} {ort.__version__} in {imported}" in row.detail
    assert f"onnxruntime 1.30.0 in {other}" in row.detail.split("not imported")[1]
    assert row.data["imported_from"] == imported


def test_two_onnxruntimes_in_one_folder_fail_naming_the_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    both = tmp_path / "site-packages"
    fake_distribution(both, "onnxruntime", "1.30.0")
    fake_distribution(both, "onnxruntime-gpu", "1.31.1")
    monkeypatch.setattr(sys, "path", [*sys.path, str(both)])
    row = next(c for c in system.onnxruntime_checks(Provider.CPU) if c.name == "one package")
    assert row.status is CheckStatus.FAIL
    assert f"onnxruntime 1.30.0 and onnxruntime-gpu 1.31.1 share {both}: each writes" in row.detail
    assert row.data["shared_folders"] == [str(both)]


def test_the_package_check_names_the_imported_one_among_several_folders(tmp_path: Path) -> None:
    first, second = tmp_path / "target", tmp_path / "site-packages"
    fake_distribution(first, "onnxruntime-gpu", "1.31.1")
    fake_distribution(second, "onnxruntime", "1.30.0")
    check = one_package_check([str(first), str(second)], imported=str(first))
    assert check.status is CheckStatus.PASS
    assert check.detail == (
        f"imported: onnxruntime-gpu 1.31.1 in {first}; not imported (elsewhere on sys.path, so "
        f"harmless): onnxruntime 1.30.0 in {second}"
    )
    fake_distribution(first, "onnxruntime", "1.30.0")
    assert one_package_check([str(first), str(second)], str(first)).status is CheckStatus.FAIL
