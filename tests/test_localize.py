"""``verify --localize``: a fault planted in one layer of an exported ONNX is named, first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

from resnext_deploy.artifact import Manifest, Variant
from resnext_deploy.cli import app
from resnext_deploy.errors import ArtifactError
from resnext_deploy.localize import find_boundaries

runner = CliRunner()


def plant(
    directory: Path, module: str, factor: float, variant: Variant = Variant.FP32, largest: float = 0
) -> None:
    """Scale ``module``'s weights in one ONNX file (by ``factor``, or so that the largest is
    ``largest``) and re-hash the manifest, as a faulty export step would leave it: the manifest is
    consistent, the numbers are not."""
    path = directory / variant.file
    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == f"{module}.weight")
    weights = numpy_helper.to_array(init)
    if largest:
        factor = largest / float(np.abs(weights.astype(np.float64)).max())
    scaled = (weights.astype(np.float64) * factor).astype(weights.dtype)
    assert np.isfinite(scaled).all()
    init.CopyFrom(numpy_helper.from_array(scaled, init.name))
    onnx.save(model, str(path))
    manifest = Manifest.read(directory)
    Manifest.build(directory, manifest.spec, manifest.versions, list(manifest.files)).write(
        directory
    )


def verify_json(directory: Path, *extra: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["verify", str(directory), "--json", "--batch-sizes", "2", *extra])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, json.loads(result.stdout)


@pytest.mark.parametrize("module", ["layer2.0.conv2", "layer3.0.conv3"])
def test_verify_localize_names_the_planted_layer_first(
    tiny_export: Path, tmp_path: Path, module: str
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    plant(export, module, 1.05)
    code, data = verify_json(export, "--localize")
    assert code == 1 and not data["passed"]
    fp32 = next(r for r in data["localization"]["results"] if r["backend"] == "onnxruntime-cpu")
    assert fp32["first_exceeding"] == module
    names = [row["name"] for row in fp32["layers"]]
    before = names[: names.index(module)]
    assert "layer1.0" in before  # the planted layer is in the middle, not first
    assert not any(row["exceeds"] for row in fp32["layers"][: len(before)])


def test_failing_parity_is_localized_without_asking(tiny_export: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    plant(export, "layer2.0.downsample.0", 0.9)
    result = runner.invoke(app, ["verify", str(export), "--batch-sizes", "2"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "first module beyond tolerance: layer2.0.downsample.0" in result.stdout


def test_the_python_api_localizes_a_failure_as_verify_does(tiny_export: Path, tmp_path: Path):  # noqa: ANN201
    from resnext_deploy.api import VerifyConfig, check_artifact, open_artifact

    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    plant(export, "layer2.0.downsample.0", 0.9)
    steps: list[str] = []
    checked = check_artifact(
        open_artifact(export), VerifyConfig(batch_sizes=(2,)), False, steps.append
    )
    assert not checked.passed and checked.failed_backends() == ["onnxruntime-cpu"]
    assert checked.localization is not None and steps == [
        "comparing backends",
        "comparing layer by layer",
    ]
    (fp32,) = checked.localization.results
    assert fp32.first_exceeding is not None
    assert fp32.first_exceeding.name == "layer2.0.downsample.0"
    assert (
        checked.to_dict()["localization"]["results"][0]["first_exceeding"]
        == fp32.first_exceeding.name
    )


def test_a_clean_export_compares_every_convolution_within_tolerance(tiny_export: Path) -> None:
    code, data = verify_json(tiny_export, "--localize")
    assert code == 0
    (fp32,) = data["localization"]["results"]
    assert fp32["first_exceeding"] is None and not fp32["missing"]
    onnx_convs = sum(
        n.op_type == "Conv" for n in onnx.load(str(tiny_export / "model.onnx")).graph.node
    )
    assert sum(row["op"].startswith("Conv") for row in fp32["layers"]) == onnx_convs
    assert max(row["max_rel"] for row in fp32["layers"]) < 1e-5


def test_fp16_localization_names_where_the_range_is_first_exceeded(
    tiny_fp16_export: Path, tmp_path: Path
) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_fp16_export, export)
    # Weights stay within fp16's range; the convolution's outputs do not.
    plant(export, "layer3.0.conv1", 0, Variant.FP16, largest=60000.0)
    code, data = verify_json(export)
    assert code == 1
    (fp16,) = data["localization"]["results"]  # only the failing backend is localized
    assert fp16["backend"] == "onnxruntime-cpu-fp16"
    assert fp16["first_fp16_overflow"] == "layer3.0.conv1"
    assert fp16["first_exceeding"] == "layer3.0.conv1"


def test_an_onnx_file_without_module_metadata_is_refused(tiny_export: Path) -> None:
    model = onnx.load(str(tiny_export / "model.onnx"))
    for node in model.graph.node:
        del node.metadata_props[:]
    with pytest.raises(ArtifactError, match="no module names"):
        find_boundaries(model)


def test_boundaries_follow_module_names_not_positions(tiny_export: Path) -> None:
    """Reversing the order of the convolutions' node names must not change which module each
    compared value belongs to: names come from metadata and weights, not from node order."""
    model = onnx.load(str(tiny_export / "model.onnx"))
    expected = {b.value: b.name for b in find_boundaries(model)}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    for node, name in zip(convs, reversed([n.name for n in convs]), strict=True):
        node.name = name
    assert {b.value: b.name for b in find_boundaries(model)} == expected
    assert expected[_conv_output(model, "layer2.0.conv2.weight")] == "layer2.0.conv2"


def _conv_output(model: onnx.ModelProto, weight: str) -> str:
    node = next(n for n in model.graph.node if n.op_type == "Conv" and n.input[1] == weight)
    relu = [n for n in model.graph.node if node.output[0] in n.input]
    return relu[0].output[0] if relu and relu[0].op_type == "Relu" else node.output[0]


def test_relative_l2_and_added_error_are_recomputed_from_the_arrays() -> None:
    from resnext_deploy.artifact import FP32_TOLERANCE
    from resnext_deploy.localize import Boundary, compare_activations

    a = Boundary("a", "a", "va", "na", "Conv")
    b = Boundary("b", "b", "vb", "nb", "Conv", upstream=("a",))
    rng = np.random.default_rng(0)
    ref = {"a": rng.standard_normal((2, 8)), "b": rng.standard_normal((2, 8))}
    cand = {"a": ref["a"] * 1.01, "b": ref["b"] * 1.03}
    loc = compare_activations("x", "ref", [a, b], ref, cand, FP32_TOLERANCE)
    assert loc.layers[0].rel_l2 == pytest.approx(0.01) and loc.layers[1].rel_l2 == pytest.approx(
        0.03
    )
    assert loc.layers[1].added == pytest.approx(0.02)
    assert loc.first_exceeding is not None and loc.first_exceeding.name == "a"
