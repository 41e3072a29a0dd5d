"""Tutorial layouts import exactly: fused/folded canonical model == the original module."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from resnext_deploy.artifact import ONNX_FILE
from resnext_deploy.errors import CheckpointError
from resnext_deploy.export.pipeline import ExportConfig, export_checkpoint
from resnext_deploy.models.checkpoint import LoadOptions, load_model
from resnext_deploy.models.layouts import detect_layout
from resnext_deploy.parity import compare, random_inputs
from resnext_deploy.runtime.ort import OrtRunner
from resnext_deploy.runtime.torch_runners import EagerRunner
from resnext_deploy.verify import VerifyConfig
from tests.models.seed_models import ModuleListResNeXt, PartsResNeXt, randomize


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def small_modulelist(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(1)
    model = randomize(ModuleListResNeXt(layers=(1, 2, 1, 1), groups=32, num_classes=3))
    return model, _save(model, tmp_path_factory.mktemp("ml") / "modulelist.pth")


@pytest.fixture(scope="module")
def small_parts(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(2)
    model = randomize(PartsResNeXt(layers=(1, 1, 2, 1), cardinality=32, classes=4, pool=2))
    return model, _save(model, tmp_path_factory.mktemp("parts") / "parts.pth")


def test_layouts_are_detected_from_keys(small_modulelist, small_parts) -> None:  # noqa: ANN001
    assert detect_layout(small_modulelist[0].state_dict()) == "modulelist"
    assert detect_layout(small_parts[0].state_dict()) == "parts"


@pytest.mark.parametrize("fixture", ["small_modulelist", "small_parts"])
def test_imported_model_equals_the_original(fixture: str, request: pytest.FixtureRequest) -> None:
    original, path = request.getfixturevalue(fixture)
    model, spec = load_model(path)
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        expected, got = original(x), model(x)
    # Forms (b) and (c) of the paper are the same function; bias folding is exact: fp32 precision.
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert spec.layout == ("modulelist" if fixture == "small_modulelist" else "parts")
    assert model.layer1[0].conv2.groups == 32


def test_modulelist_import_keeps_its_architecture(small_modulelist) -> None:  # noqa: ANN001
    model, spec = load_model(small_modulelist[1])
    cfg = spec.architecture()
    assert cfg.layers == (1, 2, 1, 1) and cfg.bn_eps == 1.001e-5 and not cfg.stride_in_1x1
    assert (cfg.cardinality, cfg.base_width) == (32, 4)


def test_parts_import_folds_biases_and_moves_stride(small_parts) -> None:  # noqa: ANN001
    model, spec = load_model(small_parts[1])
    cfg = spec.architecture()
    assert cfg.stride_in_1x1 and not cfg.conv_bias
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("fixture", ["small_modulelist", "small_parts"])
def test_export_has_one_grouped_conv_per_block_and_matches_the_original(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    original, path = request.getfixturevalue(fixture)
    result = export_checkpoint(
        path, LoadOptions(input_size=64), ExportConfig(out_dir=tmp_path / "e")
    )
    blocks = sum(result.spec.architecture().layers)
    assert result.convs.by_group[32] == blocks
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "e" / ONNX_FILE)).graph.node}
    assert "Concat" not in ops and "Split" not in ops
    runner = OrtRunner(tmp_path / "e" / ONNX_FILE)
    report = compare(
        EagerRunner(original, "original"),
        [(runner, result.parity.backends[0].tolerance)],
        random_inputs((1, 4), 64, seed=3),
    )
    assert report.passed
    assert report.backends[0].max_rel <= 1e-4 and report.backends[0].top1 == 1.0


def test_wrong_layout_is_named(small_modulelist) -> None:  # noqa: ANN001
    with pytest.raises(CheckpointError, match="look like the 'modulelist' layout"):
        load_model(small_modulelist[1], LoadOptions(layout="parts"))


def test_unknown_layout(small_parts) -> None:  # noqa: ANN001
    with pytest.raises(CheckpointError, match="unknown layout"):
        load_model(small_parts[1], LoadOptions(layout="keras"))


def test_incomplete_foreign_checkpoint(small_parts, tmp_path: Path) -> None:  # noqa: ANN001
    state = dict(small_parts[0].state_dict())
    del state["part1_1.conv2.weight"]
    path = tmp_path / "cut.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="part1_1.conv2.weight"):
        load_model(path)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "blocks"),
    [
        (lambda: ModuleListResNeXt((2, 3, 5, 2), 32, 2), 12),
        (lambda: PartsResNeXt((3, 4, 6, 3), 32, 2), 16),
    ],
    ids=["modulelist-resnext50", "parts-resnext50"],
)
def test_full_size_tutorial_checkpoints(factory, blocks: int, tmp_path: Path) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    original = randomize(factory())
    path = _save(original, tmp_path / "seed.pth")
    # The export's own parity gate runs on one image: the test compares with the original below.
    config = ExportConfig(out_dir=tmp_path / "e", verify=VerifyConfig(batch_sizes=(1,)))
    result = export_checkpoint(path, LoadOptions(), config)
    assert result.convs.by_group[32] == blocks
    runner = OrtRunner(tmp_path / "e" / ONNX_FILE)
    inputs = random_inputs((1, 2), 224, seed=5)
    report = compare(
        EagerRunner(original, "original"), [(runner, result.parity.backends[0].tolerance)], inputs
    )
    assert report.passed, report.backends[0].failures
    assert report.backends[0].max_rel <= 1e-4 and report.backends[0].top1 == 1.0
    assert np.isfinite(report.backends[0].min_cosine)
