"""The GPU proof script (benchmarks/gpu_proof.sh) runs its every step on the CPU on a tiny
model, so that it cannot rot between the rare runs on a lent GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_proof.sh"


def run_proof(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--provider",
            "cpu",
            "--arch",
            "resnext14_8x4d",
            "--batch-sizes",
            "1,2",
            "--out",
            str(tmp_path / "proof"),
            "--archive",
            str(tmp_path / "proof.tgz"),
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def steps(folder: Path) -> dict[str, str]:
    rows = (folder / "steps.tsv").read_text().splitlines()[1:]
    return {r.split("\t")[0]: r.split("\t")[3] for r in rows}


def test_every_step_of_the_proof_runs_on_the_cpu(tmp_path: Path) -> None:
    result = run_proof(tmp_path, "--no-tests")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    proof = tmp_path / "proof"
    assert steps(proof) == dict.fromkeys(
        [
            "machine",
            "doctor",
            "export",
            "probe",
            "verify",
            "no-gpu",
            "torch-free",
            "bench",
            "bench-best",
            "profile",
            "tensorrt",
            "pytest",
        ],
        "ok",
    )
    # each JSON step wrote one JSON document on stdout, whatever onnxruntime logged on stderr
    doctor = json.loads((proof / "doctor.log").read_text())
    assert doctor["passed"] and doctor["provider"] == "cpu"
    verify = json.loads((proof / "verify.log").read_text())
    assert verify["passed"]
    backends = {b["backend"] for b in verify["backends"]}
    assert backends >= {"onnxruntime-cpu", "onnxruntime-cpu-fp16"}
    probe = json.loads((proof / "probe.log").read_text())
    assert probe["iobinding"]["max_abs_diff_vs_cpu"] == 0.0
    # predict on CUDA with no GPU visible: exit 1, nothing on stdout, one error line
    assert (proof / "no-gpu.stdout").read_text() == ""
    assert (proof / "no-gpu.stderr").read_text().startswith("error: CUDAExecutionProvider")
    bench = json.loads((proof / "bench" / "resnext14_8x4d-cpu.json").read_text())
    assert {r["backend"] for r in bench["results"]} == {
        "torch-eager",
        "torchscript",
        "torchscript-optimized",
        "onnxruntime-cpu",
        "onnxruntime-cpu-fp16",
    }
    assert all(r["status"] == "ok" for r in bench["results"])
    profile = json.loads((proof / "bench" / "resnext14_8x4d-cpu-profile-profile.json").read_text())
    assert [p["variant"] for p in profile["profiles"]] == ["fp32"]
    with tarfile.open(tmp_path / "proof.tgz") as archive:
        names = archive.getnames()
    assert "proof/steps.tsv" in names and "proof/bench/resnext14_8x4d-cpu.md" in names
    assert not any(n.endswith((".onnx", ".pt", ".pth")) for n in names)  # the model stays out


def test_a_failing_step_is_recorded_and_the_rest_still_run(tmp_path: Path) -> None:
    """A cut-off or failed step must not cost the steps after it (the device time is short)."""
    result = run_proof(tmp_path, "--no-tests", "--only", "verify,no-gpu,doctor")
    assert result.returncode == 1  # no export to verify or to predict with
    assert steps(tmp_path / "proof") == {"doctor": "ok", "verify": "failed", "no-gpu": "failed"}
