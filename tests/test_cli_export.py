"""``resnext-deploy export`` options each land in the exported model: read back from model.onnx's
metadata with onnx (not from the command's own result), and from parity.json on disk."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from typer.testing import CliRunner

from resnext_deploy.cli import app
from tests.conftest import TINY
from tests.photos import write_photos

runner = CliRunner()
MEAN, STD, RESIZE = (0.11, 0.52, 0.93), (0.21, 0.35, 0.47), 80
NAMES = ("red fox", "grey wolf", "c,comma", "d", "e", "f", "g")


def invoke(*args: object):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_failure(result, fragment: str) -> None:  # noqa: ANN001
    assert result.exit_code == 1, result.output
    assert fragment in result.stderr
    assert "Traceback" not in result.output and result.stderr.count("error:") == 1


def onnx_spec(directory: Path) -> dict:
    props = {p.key: p.value for p in onnx.load(str(directory / "model.onnx")).metadata_props}
    return json.loads(props["resnext_deploy.spec"])


@pytest.fixture(scope="module")
def cli_export(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli-export")
    names = root / "names.txt"
    names.write_text("\n".join(NAMES) + "\n\n")  # blank lines are not names
    photos = write_photos(root / "photos", ".jpg")
    assert len(photos) == 8
    out = root / "out"
    result = invoke(
        "export",
        tiny_checkpoint,
        "--arch",
        TINY,
        "--out",
        out,
        "--mean",
        ",".join(map(str, MEAN)),
        "--std",
        ",".join(map(str, STD)),
        "--resize",
        RESIZE,
        "--class-names",
        f"@{names}",
        "--image",
        root / "photos",
        "--image",
        photos[0],
        "--layout",
        "torchvision",
        "--batch-sizes",
        "1,2",
    )
    assert result.exit_code == 0, result.output
    return out


def test_mean_and_std_land_in_the_spec(cli_export: Path) -> None:
    spec = onnx_spec(cli_export)
    assert spec["mean"] == pytest.approx(MEAN) and spec["std"] == pytest.approx(STD)


def test_resize_lands_in_the_spec(cli_export: Path) -> None:
    spec = onnx_spec(cli_export)
    assert spec["resize"] == RESIZE and spec["input_size"] == 64


def test_class_names_from_a_file_land_in_the_spec(cli_export: Path) -> None:
    assert tuple(onnx_spec(cli_export)["class_names"]) == NAMES


def test_layout_lands_in_the_spec(cli_export: Path) -> None:
    assert onnx_spec(cli_export)["layout"] == "torchvision"


def test_images_join_the_parity_gate(cli_export: Path) -> None:
    # Folder (8 photos) and one file again: 9 images, on top of the random batches 1 and 2.
    parity = json.loads((cli_export / "parity.json").read_text())
    assert parity["inputs"][-1] == "9 user images"
    assert parity["passed"] and all(b["rows"] == 1 + 2 + 9 for b in parity["backends"])


def test_a_missing_class_names_file_is_refused(tiny_checkpoint: Path, tmp_path: Path) -> None:
    result = invoke(
        "export", tiny_checkpoint, "--arch", TINY, "--out", tmp_path / "o",
        "--class-names", f"@{tmp_path / 'none.txt'}",
    )  # fmt: skip
    assert_clean_failure(result, "none.txt")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option", ["--mean", "--std"])
def test_mean_or_std_with_two_values_is_refused(
    tiny_checkpoint: Path, tmp_path: Path, option: str
) -> None:
    result = invoke(
        "export", tiny_checkpoint, "--arch", TINY, "--out", tmp_path / "o", option, "1,2"
    )
    assert_clean_failure(result, option)
    assert not (tmp_path / "o").exists()


def test_force_replaces_an_export_and_its_absence_keeps_it(
    cli_export: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(cli_export, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    args = ("export", tiny_checkpoint, "--arch", TINY, "--out", out, "--batch-sizes", "1")
    assert_clean_failure(invoke(*args, "--resize", 96), "allow replacing it (force)")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    result = invoke(*args, "--resize", 96, "--force")
    assert result.exit_code == 0, result.output
    spec = onnx_spec(out)
    assert spec["resize"] == 96 and spec["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


@pytest.fixture(scope="module")
def modulelist_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.models.seed_models import ModuleListResNeXt, randomize

    torch.manual_seed(3)
    model = randomize(ModuleListResNeXt(layers=(1, 1, 1, 1), groups=32, num_classes=3))
    path = tmp_path_factory.mktemp("modulelist") / "modulelist.pth"
    torch.save(model.state_dict(), path)
    return path


def test_layout_option_selects_the_importer(modulelist_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    base = ("export", modulelist_checkpoint, "--input-size", 32, "--batch-sizes", "1")
    assert_clean_failure(invoke(*base, "--out", out, "--layout", "parts"), "modulelist")
    assert not out.exists()
    result = invoke(*base, "--out", out, "--layout", "modulelist")
    assert result.exit_code == 0, result.output
    spec = onnx_spec(out)
    assert spec["layout"] == "modulelist" and spec["num_classes"] == 3
