"""The command line: every bad input ends in one clear line on stderr and exit status 1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from resnext_deploy.cli import app
from tests.conftest import TINY

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, fragment: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output and result.stderr.count("error:") == 1


def test_export_then_verify_and_inspect(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "exp"
    result = invoke("export", tiny_checkpoint, "--arch", TINY, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["parity"]["passed"] and data["conv_groups"] == {"1": 13, "8": 4}
    result = invoke("verify", out, "--json", "--batch-sizes", "1,3")
    assert result.exit_code == 0 and json.loads(result.stdout)["passed"]
    result = invoke("inspect", out / "model.onnx", "--json")
    info = json.loads(result.stdout)
    assert info["conv_groups"] == {"1": 13, "8": 4} and info["opset"] >= 18
    assert info["inputs"][0]["shape"] == ["batch", 3, 64, 64]
    assert info["metadata"]["arch"] == TINY
    result = invoke("inspect", out / "model.torchscript.pt")
    assert result.exit_code == 0 and "group=8" in result.stdout


def test_models_lists_the_registry() -> None:
    result = invoke("models", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["resnext50_32x4d"]["params"] == 25_028_904
    assert rows["resnext29_16x64d"]["config"]["stem"] == "cifar"


def test_missing_checkpoint(tmp_path: Path) -> None:
    result = invoke("export", tmp_path / "none.pth", "--arch", TINY, "--out", tmp_path / "o")
    assert_clean_failure(result, "checkpoint not found")
    assert not (tmp_path / "o").exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"\x00\x01garbage")
    assert_clean_failure(
        invoke("export", bad, "--arch", TINY, "--out", tmp_path / "o"), "not a PyTorch checkpoint"
    )


def test_pickled_model(tiny_model, tmp_path: Path) -> None:
    path = tmp_path / "full.pth"
    torch.save(tiny_model, path)
    assert_clean_failure(
        invoke("export", path, "--arch", TINY, "--out", tmp_path / "o"), "pickled Python object"
    )


def test_wrong_architecture(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = invoke("export", tiny_checkpoint, "--arch", "resnext50_32x4d", "--out", tmp_path / "o")
    assert_clean_failure(result, "It fits: resnext14_8x4d")
    assert not (tmp_path / "o").exists()


def test_unknown_architecture(tiny_checkpoint: Path, tmp_path: Path) -> None:
    assert_clean_failure(
        invoke("export", tiny_checkpoint, "--arch", "resnet9000"),
        "unknown architecture 'resnet9000'",
    )


def test_wrong_class_count(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = invoke(
        "export", tiny_checkpoint, "--arch", TINY, "--num-classes", "1000", "--out", tmp_path / "o"
    )
    assert_clean_failure(result, "has 7 classes")


def test_tampered_artifact(tiny_export: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_export, copy)
    with (copy / "weights.pt").open("r+b") as f:
        f.seek(100)
        f.write(b"\x00" * 8)
    assert_clean_failure(invoke("verify", copy), "modified after export")


def test_not_an_export_directory(tmp_path: Path) -> None:
    assert_clean_failure(invoke("verify", tmp_path), "no manifest.json")


def test_cuda_requested_without_gpu(tiny_export: Path) -> None:
    from tests.conftest import has_cuda

    if has_cuda():
        pytest.skip("this machine has a usable GPU")
    assert_clean_failure(
        invoke("verify", tiny_export, "--provider", "cuda"), "CUDAExecutionProvider was requested"
    )


def test_bad_batch_sizes(tiny_export: Path) -> None:
    assert_clean_failure(
        invoke("verify", tiny_export, "--batch-sizes", "1,x"), "comma-separated integers"
    )


def test_predict_on_cuda_without_gpu(tiny_export: Path, tmp_path: Path) -> None:
    from tests.conftest import has_cuda

    if has_cuda():
        pytest.skip("this machine has a usable GPU")
    result = invoke("predict", tiny_export, tmp_path, "--provider", "cuda")
    assert_clean_failure(result, "CUDAExecutionProvider was requested")
