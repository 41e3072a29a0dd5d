"""``resnext-deploy doctor``: passes here on the CPU, fails with the reason for a GPU provider
this machine cannot run, and ``--json`` is the only thing on stdout."""

from __future__ import annotations

import ctypes
import json
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
from resnext_deploy.doctor.smoke import tiny_resnext_onnx
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.providers import Provider
from tests.conftest import has_cuda

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
