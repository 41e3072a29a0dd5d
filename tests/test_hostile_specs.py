"""Hostile model specs, checkpoints and image shapes (issue 23, classes 3, 6 and 8).

A spec travels from a checkpoint (which a user may have edited) into every export, and its
``resize`` decides how large a decoded image grows: a class name with a newline, an architecture
name that is a path or unregistered, a field of the wrong type, a size no model has, and an image
whose resize would take gigabytes all end with one ``error:`` line before any long work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import resnext_deploy.preprocess as preprocess
from resnext_deploy.errors import ConfigError, DataError
from resnext_deploy.preprocess import load_image, resize_and_crop
from resnext_deploy.spec import ArchConfig, ModelSpec
from tests.conftest import TINY
from tests.hostile_images import memory_guard, write_strip_png
from tests.test_hostile import assert_one_error, invoke, workspace

__all__ = ["memory_guard", "workspace"]  # fixtures used by name below

NAMES = [f"c{i}" for i in range(7)]
# The bounds, spelled out: tests that read them from the package could not fail before it has them.
MAX_INPUT_SIZE, MAX_RESIZE = 2048, 4096
MAX_IMAGE_SIDE, MAX_RESIZED_PIXELS = 65_535, 33_554_432


def train_checkpoint(folder: Path, tiny_checkpoint: Path, **spec: Any) -> Path:
    """The tiny weights saved the way ``train`` saves them: the state dict with its full spec,
    with ``spec``'s fields replacing the honest ones (``None`` drops a field)."""
    import torch

    from resnext_deploy.models.registry import ARCHS

    honest = ModelSpec(
        arch=TINY,
        num_classes=7,
        input_size=64,
        resize=73,
        class_names=tuple(NAMES),
        arch_config=ARCHS.get(TINY).to_dict(),
    ).to_dict()
    fields = {k: v for k, v in (honest | spec).items() if v is not None}
    state = torch.load(tiny_checkpoint, weights_only=True)
    path = folder / "trained.pth"
    torch.save({"state_dict": state, "spec": fields}, path)
    return path


# --- class 3: class names and architecture names ----------------------------------------------


@pytest.mark.parametrize("bad", ["c1\nc2", "c1\r", "tab\there", "sep\u2028arated", "", "\udcff"])
def test_a_class_name_that_would_break_labels_txt_is_refused(
    workspace: Path, tiny_checkpoint: Path, bad: str
) -> None:
    names = [*NAMES[:3], bad, *NAMES[4:]]
    ckpt = train_checkpoint(workspace, tiny_checkpoint, class_names=names)
    result = invoke("export", ckpt, "--out", "exp")
    assert_one_error(result, "class name")
    assert "trained.pth" in result.stderr
    assert not (workspace / "exp").exists()


def test_a_class_name_with_a_newline_never_reaches_a_spec() -> None:
    with pytest.raises(ConfigError, match=r"class name 'b\\nc' holds a line break"):
        ModelSpec("tiny", 3, 64, 73, class_names=("a", "b\nc", "d"))


@pytest.mark.parametrize("arch", ["nope", "../x", "/abs/x", "resnext14_8x4d/.."])
def test_export_arch_on_a_train_checkpoint_must_be_registered(
    workspace: Path, tiny_checkpoint: Path, arch: str
) -> None:
    ckpt = train_checkpoint(workspace, tiny_checkpoint)
    result = invoke("export", ckpt, "--arch", arch, "--out", "exp")
    assert_one_error(result, f"unknown architecture {arch!r}")
    assert not (workspace / "exp").exists()


def test_a_saved_arch_that_is_a_path_is_refused_even_with_an_output_folder(
    workspace: Path, tiny_checkpoint: Path
) -> None:
    ckpt = train_checkpoint(workspace, tiny_checkpoint, arch="../x")
    assert_one_error(invoke("export", ckpt, "--out", "exp"), "'../x' is a path")
    assert not (workspace / "exp").exists()


# --- class 8: fields of the wrong type, sizes no model has ------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("class_names", 5),
        ("class_names", "c0c1c2c3c4c5c6"),
        ("mean", "abc"),
        ("std", [1, 2]),
        ("std", [0.2, "x", 0.2]),
        ("input_size", "big"),
        ("input_size", 64.0),
        ("resize", True),
        ("arch", 5),
        ("layout", 7),
        ("arch_config", "resnet"),
    ],
)
def test_a_checkpoint_spec_field_of_the_wrong_type(
    workspace: Path, tiny_checkpoint: Path, field: str, value: Any
) -> None:
    ckpt = train_checkpoint(workspace, tiny_checkpoint, **{field: value})
    result = invoke("export", ckpt, "--out", "exp")
    assert_one_error(result, f"{field!r} must be")
    assert "trained.pth" in result.stderr
    assert not (workspace / "exp").exists()


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("resize", 10**6, "'resize' must be between 1 and 4,096, got 1000000"),
        ("input_size", 100_000, "'input_size' must be between 1 and 2,048, got 100000"),
        ("input_size", 0, "'input_size' must be between 1 and 2,048, got 0"),
        ("mean", [float("nan"), 0.4, 0.4], "'mean' must be three finite numbers"),
    ],
)
def test_a_checkpoint_spec_with_absurd_sizes_is_refused_at_export(
    workspace: Path,
    tiny_checkpoint: Path,
    memory_guard: None,
    field: str,
    value: Any,
    fragment: str,
) -> None:
    ckpt = train_checkpoint(workspace, tiny_checkpoint, **{field: value})
    assert_one_error(invoke("export", ckpt, "--out", "exp"), fragment)
    assert not (workspace / "exp").exists()


@pytest.mark.parametrize("field", ["resize", "mean", "class_names"])
def test_a_spec_holding_an_integer_too_long_to_print_is_one_config_error(field: str) -> None:
    # torch.load(weights_only=True) and our JSON parser refuse such ints; a caller of the API
    # may not, and repr() and float() raise on them (ValueError, OverflowError).
    huge = 10**5000
    value = huge if field == "resize" else [huge, 0.4, 0.4]
    fields = {"arch": "tiny", "num_classes": 3, "input_size": 64, "resize": 73, field: value}
    with pytest.raises(ConfigError, match=f"'{field}' must be .*huge integer"):
        ModelSpec(**fields)


def test_spec_sizes_are_bounded() -> None:
    with pytest.raises(ConfigError, match="'input_size' must be between 1 and 2,048"):
        ModelSpec("tiny", 7, MAX_INPUT_SIZE + 1, MAX_RESIZE)
    with pytest.raises(ConfigError, match="'resize' must be between 1 and 4,096"):
        ModelSpec("tiny", 7, 64, MAX_RESIZE + 1)
    with pytest.raises(ConfigError, match="'num_classes' must be between 1 and 100,000"):
        ModelSpec("tiny", 10**12, 64, 73)
    assert ModelSpec("tiny", 7, MAX_INPUT_SIZE, MAX_RESIZE).resize == MAX_RESIZE


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        # Each is cheap to build even where the bound is missing (a test must not take GBs).
        ({"layers": [1000, 1, 1, 1]}, "at most 256 blocks per stage"),
        ({"cardinality": 1500, "base_width": 1}, "'cardinality' must be between"),
        ({"bn_eps": "tiny"}, "'bn_eps' must be a number"),
    ],
)
def test_a_saved_architecture_config_that_no_model_has_is_refused(
    workspace: Path, tiny_checkpoint: Path, change: dict[str, Any], fragment: str
) -> None:
    from resnext_deploy.models.registry import ARCHS

    config = ARCHS.get(TINY).to_dict() | change
    ckpt = train_checkpoint(workspace, tiny_checkpoint, arch="custom", arch_config=config)
    assert_one_error(invoke("export", ckpt, "--out", "exp"), fragment)


def test_an_architecture_config_no_model_has_is_refused_before_building() -> None:
    with pytest.raises(ConfigError, match="at most 256 blocks per stage"):
        ArchConfig((10**6, 1, 1, 1))
    with pytest.raises(ConfigError, match="'cardinality' must be between 1 and 1,024"):
        ArchConfig((3, 4, 6, 3), cardinality=10**9)
    with pytest.raises(ConfigError, match="channels"):
        ArchConfig((3, 4, 6, 3), cardinality=1024, base_width=1024)
    with pytest.raises(ConfigError, match="'input_size' must be between 1 and 2,048"):
        ArchConfig((3, 4, 6, 3), input_size=10**5)


def test_an_export_whose_manifest_spec_has_an_absurd_resize_is_refused(
    workspace: Path, tiny_export: Path
) -> None:
    import shutil

    export = workspace / "edited"
    shutil.copytree(tiny_export, export)
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["spec"]["resize"] = 10**6
    (export / "manifest.json").write_text(json.dumps(manifest))
    assert_one_error(invoke("predict", export, "photos"), "'resize' must be between")


# --- class 6: images whose resize explodes ----------------------------------------------------


def test_predict_skips_images_of_absurd_sides_before_decoding(
    workspace: Path, tiny_export: Path, memory_guard: None
) -> None:
    folder = workspace / "photos"
    write_strip_png(folder / "tall.png", 1, 5_000_000)
    write_strip_png(folder / "wide.png", 40_000_000, 1)
    assert (folder / "wide.png").stat().st_size < 100_000
    result = invoke("predict", tiny_export, folder, "--format", "json")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    files = [Path(p["file"]).name for p in json.loads(result.stdout)["predictions"]]
    assert files == ["cat.png"]
    assert "tall.png: image is 1x5000000 pixels" in result.stderr
    assert "wide.png: image is 40000000x1 pixels" in result.stderr
    assert "2 file(s) could not be classified" in result.stderr
    for name in ("tall.png", "wide.png"):
        (folder / name).unlink()


def test_predict_refuses_an_image_whose_resize_would_take_gigabytes(
    workspace: Path, tiny_export: Path, memory_guard: None
) -> None:
    # 1 x 60,000 decodes to 180 KB; resized to 73 on its short side it would be 73 x 4,380,000.
    strip = write_strip_png(workspace / "strip.png", 1, 60_000)
    result = invoke("predict", tiny_export, strip)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "73x4380000" in result.stderr and "pixels" in result.stderr
    strip.unlink()


def test_load_image_given_a_spec_checks_the_resized_size_from_the_header(
    tmp_path: Path, memory_guard: None
) -> None:
    strip = write_strip_png(tmp_path / "strip.png", 60_000, 1)
    spec = ModelSpec("tiny", 7, 64, 73)
    assert load_image(strip).shape == (1, 60_000, 3)  # decoding alone is cheap
    with pytest.raises(DataError, match=r"strip\.png: image is 60000x1 pixels.*4380000x73"):
        load_image(strip, spec)


def test_resize_and_crop_refuses_an_output_of_gigabytes(memory_guard: None) -> None:
    spec = ModelSpec("tiny", 7, 64, 73)
    with pytest.raises(DataError, match=f"73x4380000; .*{MAX_RESIZED_PIXELS:,} pixels in all"):
        resize_and_crop(np.zeros((60_000, 1, 3), np.uint8), spec)


@pytest.mark.parametrize(
    ("width", "height", "resize", "expected"),
    [
        (40_000, 2_500, 256, (4096, 256)),  # a 100-megapixel panorama
        (2_500, 40_000, 256, (256, 4096)),
        (4_000, 3_000, MAX_RESIZE, (5461, 4096)),  # a photo at the largest resize
        (MAX_IMAGE_SIDE, 256, 256, (MAX_IMAGE_SIDE, 256)),
        (1, 1, MAX_RESIZE, (MAX_RESIZE, MAX_RESIZE)),
    ],
)
def test_real_photos_pass_the_size_check(
    width: int, height: int, resize: int, expected: tuple[int, int]
) -> None:
    spec = ModelSpec("tiny", 7, 64, resize)
    assert preprocess.check_image_size(width, height, spec) == expected


@pytest.mark.parametrize(
    ("width", "height", "resize", "fragment"),
    [
        (1, 2_000_000, 256, "is 1x2000000 pixels; at most 65,535 pixels per side"),
        (MAX_IMAGE_SIDE + 1, 300, 256, "at most 65,535 pixels per side"),
        (300, 1, 300, "would be 90000x300; at most 65,535 pixels per side"),
        (4_000, 1_000, MAX_RESIZE, "would be 16384x4096; .* and 33,554,432 pixels in all"),
        (0, 10, 256, "empty"),
    ],
)
def test_absurd_shapes_fail_the_size_check(
    width: int, height: int, resize: int, fragment: str
) -> None:
    with pytest.raises(DataError, match=fragment):
        preprocess.check_image_size(width, height, ModelSpec("tiny", 7, 64, resize))


def test_train_refuses_a_class_folder_whose_name_holds_a_newline(workspace: Path) -> None:
    from PIL import Image

    for name in ("a\nb", "c"):
        (workspace / "data" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.full((24, 24, 3), 40 * i, np.uint8)
            Image.fromarray(pixels).save(workspace / "data" / name / f"{i}.png")
    result = invoke("train", "data", "--out", "run", "--epochs", "1")
    assert_one_error(result, r"class name 'a\nb' holds a line break")
    assert not (workspace / "run").exists()


def test_one_image_with_an_absurd_resize_among_photos_is_skipped_not_fatal(
    workspace: Path, tiny_export: Path, memory_guard: None
) -> None:
    """Checked per file, like an unreadable one: the photos are still classified."""
    folder = workspace / "photos"
    strip = write_strip_png(folder / "strip.png", 60_000, 1)
    result = invoke("predict", tiny_export, folder, "--format", "json")
    strip.unlink()
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    files = [Path(p["file"]).name for p in json.loads(result.stdout)["predictions"]]
    assert files == ["cat.png"]
    assert "strip.png: image is 60000x1 pixels" in result.stderr
    assert "1 file(s) could not be classified" in result.stderr
