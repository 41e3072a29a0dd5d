"""Image preprocessing from a :class:`ModelSpec`, with numpy and Pillow only (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from resnext_deploy.errors import DataError
from resnext_deploy.spec import ModelSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB ``H x W x 3``. Raises :class:`DataError` naming the file."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


def resize_and_crop(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """Resize so the shorter side is ``spec.resize`` (bilinear), centre-crop ``input_size``."""
    from PIL import Image

    img = Image.fromarray(rgb)
    w, h = img.size
    scale = spec.resize / min(w, h)
    new_w, new_h = max(spec.input_size, round(w * scale)), max(spec.input_size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - spec.input_size) // 2, (new_h - spec.input_size) // 2
    img = img.crop((left, top, left + spec.input_size, top + spec.input_size))
    return np.asarray(img, dtype=np.uint8)


def normalize(batch_uint8: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """uint8 ``N x H x W x 3`` -> float32 ``N x 3 x H x W``, scaled and normalised."""
    scaled = batch_uint8.astype(np.float32) / np.float32(255.0)
    normed = (scaled - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(normed.transpose(0, 3, 1, 2))


def preprocess(images: list[np.ndarray], spec: ModelSpec) -> np.ndarray:
    """RGB uint8 images of any size -> the model's float32 input batch."""
    return normalize(np.stack([resize_and_crop(im, spec) for im in images]), spec)


def list_images(paths: list[Path]) -> list[Path]:
    """Expand directories (recursively, sorted) into image files; keep explicit files as given."""
    found: list[Path] = []
    for p in paths:
        if p.is_dir():
            found += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(p)
    return found
