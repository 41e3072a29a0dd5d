"""Preprocessing equals torchvision's ``Resize`` + ``CenterCrop`` + ``Normalize`` pixel for pixel,
on real colour photographs, landscape and portrait, odd sizes and several resize/crop pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import center_crop, preprocess, resize_and_crop, resized_size
from resnext_deploy.spec import ModelSpec
from tests.photos import colour_photos

PAIRS = [(256, 224), (232, 224), (224, 224), (36, 32), (73, 64), (19, 16), (255, 224)]
# Different per channel, so a channel-order mistake cannot cancel out.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _spec(resize: int, crop: int) -> ModelSpec:
    return ModelSpec("test", 3, input_size=crop, resize=resize, mean=MEAN, std=STD)


def _torchvision_crop(rgb: np.ndarray, resize: int, crop: int) -> np.ndarray:
    pipeline = v2.Compose([v2.Resize(resize), v2.CenterCrop(crop)])
    return np.asarray(pipeline(Image.fromarray(rgb)))


def _torchvision_tensor(rgb: np.ndarray, resize: int, crop: int) -> np.ndarray:
    pipeline = v2.Compose(
        [
            v2.Resize(resize),
            v2.CenterCrop(crop),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )
    return pipeline(Image.fromarray(rgb)).numpy()


@pytest.mark.parametrize(("resize", "crop"), PAIRS)
@pytest.mark.parametrize("name", list(colour_photos()))
def test_uint8_crop_equals_torchvision(name: str, resize: int, crop: int) -> None:
    rgb = colour_photos()[name]
    ours = resize_and_crop(rgb, _spec(resize, crop))
    expected = _torchvision_crop(rgb, resize, crop)
    assert ours.shape == expected.shape == (crop, crop, 3) and ours.dtype == np.uint8
    assert int(np.abs(ours.astype(np.int16) - expected).max()) == 0


@pytest.mark.parametrize(("resize", "crop"), PAIRS)
def test_normalised_batch_equals_torchvision(resize: int, crop: int) -> None:
    photos = list(colour_photos().values())
    ours = preprocess(photos, _spec(resize, crop))
    expected = np.stack([_torchvision_tensor(rgb, resize, crop) for rgb in photos])
    assert ours.shape == expected.shape == (len(photos), 3, crop, crop)
    assert ours.dtype == np.float32
    assert float(np.abs(ours - expected).max()) <= 1e-6


def test_the_cases_where_rounding_used_to_differ() -> None:
    # 640 x 427 at 256: 256 * 640 / 427 = 383.7, torchvision truncates to 383 (round() gave 384),
    # and the crop offset (383 - 224) / 2 = 79.5 rounds half-to-even to 80 (// 2 gave 79).
    assert resized_size(640, 427, 256) == (383, 256)
    assert resized_size(427, 640, 256) == (256, 383)
    rows = np.broadcast_to(np.arange(383).reshape(383, 1, 1), (383, 224, 1))
    assert center_crop(rows, 224)[0, 0, 0] == 80
    # 7 / 2 = 3.5 -> 4 and 5 / 2 = 2.5 -> 2: Python's round (half to even), as torchvision's.
    cols = np.broadcast_to(np.arange(11).reshape(1, 11, 1), (4, 11, 1))
    assert center_crop(cols, 4)[0, 0, 0] == 4
    assert center_crop(cols[:, :9], 4)[0, 0, 0] == 2


@pytest.mark.parametrize("shape", [(20, 50), (31, 31), (64, 10), (5, 7)])
def test_crop_larger_than_the_image_pads_like_torchvision(shape: tuple[int, int]) -> None:
    # Resize(resize >= crop) never leaves a side shorter than the crop, but CenterCrop on its own
    # zero-pads; the array function does the same.
    rgb = colour_photos()["china 427x640"][100 : 100 + shape[0], 200 : 200 + shape[1]]
    expected = np.asarray(v2.CenterCrop(32)(Image.fromarray(rgb)))
    ours = center_crop(rgb, 32)
    assert ours.shape == expected.shape == (32, 32, 3)
    assert int(np.abs(ours.astype(np.int16) - expected).max()) == 0


def test_an_empty_image_is_refused() -> None:
    with pytest.raises(DataError, match="empty"):
        resize_and_crop(np.zeros((0, 10, 3), np.uint8), _spec(36, 32))
