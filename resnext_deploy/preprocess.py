"""Image preprocessing from a :class:`ModelSpec`, with numpy and Pillow only (no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from resnext_deploy.errors import DataError
from resnext_deploy.spec import ModelSpec

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}

# The resize to ``spec.resize`` on the short side scales the long side by the same factor, so a
# thin strip of a few KB (1 x 2,000,000) would grow to gigabytes. Both sizes are bounded from the
# header, before any pixel is decoded or resized; no photograph comes near: a 100-megapixel
# panorama (40,000 x 2,500) at resize 256 becomes 4,096 x 256, and a 4:3 photo at the largest
# resize (4,096) 5,461 x 4,096. The decoded pixel count is Pillow's decompression-bomb limit.
MAX_IMAGE_SIDE = 65_535  # a decoded image's side (JPEG's own limit)
MAX_RESIZED_SIDE = 65_535
MAX_RESIZED_PIXELS = 32 << 20  # 33,554,432: about 130 MB as Pillow holds RGB


def load_image(path: str | Path, spec: ModelSpec | None = None) -> np.ndarray:
    """Read an image file as uint8 RGB ``H x W x 3`` (see :func:`to_rgb`). Raises
    :class:`DataError` naming the file, also for a decompression bomb: an image declaring more
    pixels than Pillow's ``Image.MAX_IMAGE_PIXELS``, or a side over ``MAX_IMAGE_SIDE``, refused
    from its header before decoding; with ``spec``, also for an image whose resize to
    ``spec.resize`` would be too large (:func:`check_image_size`)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with warnings.catch_warnings():
            # Pillow only warns up to twice its limit (and raises beyond): refuse both alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_image_size(img.width, img.height, spec)
                return to_rgb(img)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(
            f"{path}: too many pixels to decode safely, a possible decompression bomb ({exc})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{path}: not a readable image ({type(exc).__name__})") from None


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_rgb(img: Any) -> np.ndarray:
    """A Pillow image as uint8 RGB ``H x W x 3``. 16-bit greyscale (modes ``I;16*``, and ``I`` as
    16-bit PNGs and TIFFs give it) keeps its high byte, as Pillow does for 16-bit colour;
    ``convert("RGB")`` would clip every value above 255 to white."""
    if img.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(img).astype(np.int64)
        grey = (np.clip(values, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def check_image_size(width: int, height: int, spec: ModelSpec | None = None) -> tuple[int, int]:
    """The size a ``width x height`` image has after the resize of ``spec`` (its own size
    without a spec). Cheap: call it with the header's size, before decoding. Raises
    :class:`DataError` for a side over ``MAX_IMAGE_SIDE`` or a resized image over
    ``MAX_RESIZED_SIDE`` per side or ``MAX_RESIZED_PIXELS`` in all, saying the bound."""
    if width < 1 or height < 1:
        raise DataError(f"image is {width}x{height} pixels: empty")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise DataError(
            f"image is {width}x{height} pixels; at most {MAX_IMAGE_SIDE:,} pixels per side"
        )
    if spec is None:
        return width, height
    new_width, new_height = resized_size(width, height, spec.resize)
    if max(new_width, new_height) > MAX_RESIZED_SIDE or new_width * new_height > MAX_RESIZED_PIXELS:
        raise DataError(
            f"image is {width}x{height} pixels: resized to {spec.resize} on its short side it "
            f"would be {new_width}x{new_height}; at most {MAX_RESIZED_SIDE:,} pixels per side "
            f"and {MAX_RESIZED_PIXELS:,} pixels in all (crop the image closer to its subject)"
        )
    return new_width, new_height


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """``(width, height)`` after torchvision's ``Resize(size)``: the shorter side becomes
    ``size`` and the longer ``int(size * long / short)`` (truncated, not rounded)."""
    short, long = min(width, height), max(width, height)
    if short < 1:
        raise DataError(f"cannot resize an empty {width}x{height} image")
    new_long = int(size * long / short)
    return (size, new_long) if width <= height else (new_long, size)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's ``CenterCrop(size)`` on an ``H x W x C`` array: a side shorter than ``size``
    is zero-padded first (the odd pixel goes right/bottom), and the crop starts at
    ``int(round((side - size) / 2))`` -- Python's round, half to even."""
    h, w = image.shape[:2]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        pad = ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2)) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pad)
        h, w = image.shape[:2]
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return np.ascontiguousarray(image[top : top + size, left : left + size])


def resize_and_crop(rgb: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """torchvision's ``Resize(spec.resize)`` + ``CenterCrop(spec.input_size)`` on a PIL image,
    pixel for pixel: Pillow's bilinear resize (which always antialiases when shrinking), the
    same output size and the same crop offsets. Returns uint8 ``input_size x input_size x 3``.
    Raises :class:`DataError` before resizing an image :func:`check_image_size` refuses."""
    from PIL import Image

    size = check_image_size(rgb.shape[1], rgb.shape[0], spec)
    img = Image.fromarray(rgb)
    if size != img.size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    return center_crop(np.asarray(img, dtype=np.uint8), spec.input_size)


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
