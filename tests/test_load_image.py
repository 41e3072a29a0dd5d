"""``load_image`` on files that used to crash a run or silently ruin its input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import load_image
from tests.hostile_files import photo_as_16bit, write_bomb_png
from tests.photos import colour_photos


@pytest.mark.parametrize("side", [30000, 10000])  # over twice Pillow's limit; between 1x and 2x
def test_a_decompression_bomb_is_a_data_error_naming_the_file(tmp_path: Path, side: int) -> None:
    bomb = write_bomb_png(tmp_path / "bomb.png", side, side)
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DataError, match=r"bomb\.png: too many pixels .*decompression bomb"):
        load_image(bomb)


def test_a_16_bit_greyscale_png_keeps_its_tones(tmp_path: Path) -> None:
    photo = colour_photos()["china 99x301"]
    green = photo[..., 1]
    Image.fromarray(photo_as_16bit(green)).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    rgb = load_image(tmp_path / "scan.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (*green.shape, 3)
    # The independent reference is the 8-bit photo the 16-bit file was made from.
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], green)


def test_a_32_bit_integer_image_holding_16_bit_values_is_scaled_not_clipped(tmp_path: Path) -> None:
    red = colour_photos()["flower 297x211"][..., 0]
    Image.fromarray(photo_as_16bit(red).astype(np.int32)).save(tmp_path / "scan.tif")
    assert Image.open(tmp_path / "scan.tif").mode == "I"
    np.testing.assert_array_equal(load_image(tmp_path / "scan.tif")[..., 0], red)


def test_8_bit_colour_is_unchanged(tmp_path: Path) -> None:
    photo = colour_photos()["flower 297x211"]
    Image.fromarray(photo).save(tmp_path / "flower.png")
    np.testing.assert_array_equal(load_image(tmp_path / "flower.png"), photo)


def test_a_bomb_in_a_training_folder_is_skipped_and_listed(tmp_path: Path) -> None:
    from resnext_deploy.data import load_image_folder
    from tests.test_data import make_folder

    root = make_folder(tmp_path / "data", {"a": 4, "b": 4})
    write_bomb_png(root / "a" / "bomb.png")
    data = load_image_folder(root, 16)
    assert len(data.train) + len(data.val) == 8
    assert [s for s in data.skipped if "bomb.png" in s and "decompression bomb" in s]


def test_a_bomb_among_calibration_images_is_skipped(tmp_path: Path) -> None:
    from resnext_deploy.export.calibration import CalibrationConfig, calibration_sets
    from resnext_deploy.spec import ModelSpec
    from tests.test_data import make_folder

    root = make_folder(tmp_path / "calib", {"a": 3, "b": 3})
    write_bomb_png(root / "bomb.png")
    spec = ModelSpec("x", 2, 16, 16)
    calib, held_out = calibration_sets(CalibrationConfig(source=str(root)), spec)
    assert len(calib) + len(held_out) == 6
