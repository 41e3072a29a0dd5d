"""Real colour photographs for tests where channel order or pixel positions could matter.

scikit-learn ships two (china.jpg and flower.jpg, 427 x 640 RGB) inside its package, so they work
offline. The variants add a portrait orientation and odd sizes, where rounding differences show.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np


@functools.cache
def _sample_images() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.ascontiguousarray(im) for im in load_sample_images().images)


@functools.cache
def colour_photos() -> dict[str, np.ndarray]:
    """name -> uint8 ``H x W x 3`` RGB: landscape, portrait and odd-sized crops of both photos."""
    china, flower = _sample_images()
    photos = {
        "china 427x640": china,
        "flower 427x640": flower,
        "china portrait 640x427": np.ascontiguousarray(china.transpose(1, 0, 2)),
        "flower portrait 640x427": np.ascontiguousarray(np.rot90(flower)),
        "china 401x533": china[13:414, 51:584],
        "flower 297x211": flower[40:337, 300:511],
        "china 99x301": china[200:299, 17:318],
        "flower portrait 333x75": np.ascontiguousarray(np.rot90(flower[101:176, 7:340], k=-1)),
    }
    for name, im in photos.items():
        assert im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3, name
        assert f"{im.shape[0]}x{im.shape[1]}" in name, name
    return photos


def write_photos(directory: Path, suffix: str = ".png") -> list[Path]:
    """Write every photo to ``directory`` (PNG keeps the pixels exact; JPEG re-encodes them)."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(colour_photos().values()):
        path = directory / f"photo{i}{suffix}"
        Image.fromarray(im).save(path)
        paths.append(path)
    return paths
