"""``verify`` end to end: an export whose ONNX file computes something else fails, even when its
manifest was re-hashed to match (so only the numbers can tell)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from resnext_deploy.artifact import MANIFEST_FILE, ONNX_FILE, Manifest, open_artifact
from resnext_deploy.cli import app
from resnext_deploy.verify import VerifyConfig, verify_artifact


def _perturbed_copy(export: Path, tmp_path: Path) -> Path:
    """A copy of ``export`` with one conv weight of model.onnx scaled by 1.5 and a manifest
    re-hashed over the changed file: integrity checks pass, parity must not."""
    copy = tmp_path / "perturbed"
    shutil.copytree(export, copy)
    model = onnx.load(str(copy / ONNX_FILE))
    initializers = {t.name: t for t in model.graph.initializer}
    conv = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in initializers)
    weight = initializers[conv.input[1]]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save_model(model, str(copy / ONNX_FILE))
    old = Manifest.read(copy)
    Manifest.build(copy, old.spec, old.versions, list(old.files)).write(copy)
    new = json.loads((copy / MANIFEST_FILE).read_text())
    assert new["files"][ONNX_FILE]["sha256"] != old.files[ONNX_FILE].sha256
    return copy


@pytest.fixture(scope="module")
def perturbed(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _perturbed_copy(tiny_export, tmp_path_factory.mktemp("perturbed"))


def test_a_perturbed_export_with_a_rehashed_manifest_fails_parity(perturbed: Path) -> None:
    artifact = open_artifact(perturbed)  # the integrity check passes: the manifest matches
    report = verify_artifact(artifact, VerifyConfig(batch_sizes=(1, 2)))
    by_name = {b.backend: b for b in report.backends}
    assert by_name["torchscript"].passed and not by_name["onnxruntime-cpu"].passed
    assert not report.passed


def test_verify_command_exits_1_on_a_perturbed_export(perturbed: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(perturbed), "--batch-sizes", "1,2", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is False
    assert [b["backend"] for b in data["backends"] if not b["passed"]] == ["onnxruntime-cpu"]


def test_verify_passes_the_untouched_export(tiny_export: Path) -> None:
    result = CliRunner().invoke(app, ["verify", str(tiny_export), "--batch-sizes", "1,2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and all(b["passed"] for b in data["backends"])
    assert np.isfinite([b["max_rel"] for b in data["backends"]]).all()
