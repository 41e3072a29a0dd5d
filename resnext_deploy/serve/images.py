"""Decode an uploaded JPEG or PNG the way ``predict`` reads a file, refusing what could hurt the
server: other formats, undecodable bytes and decompression bombs (checked from the header,
before any pixel is decoded)."""

from __future__ import annotations

import io
import warnings

import numpy as np

from resnext_deploy.errors import DataError
from resnext_deploy.preprocess import check_image_size, to_rgb
from resnext_deploy.serve.protocol import RequestError
from resnext_deploy.spec import ModelSpec

FORMATS = ("JPEG", "PNG")


def decode_image(data: bytes, max_pixels: int, spec: ModelSpec) -> np.ndarray:
    """uint8 RGB ``H x W x 3``, converted exactly as :func:`resnext_deploy.preprocess.load_image`
    converts a file. Raises :class:`RequestError`: 400 for empty or undecodable bytes, for
    images over ``max_pixels`` and for those ``predict`` refuses too (a side over its bound, or a
    resize to ``spec.resize`` too large: :func:`check_image_size`), 415 for formats other than
    JPEG and PNG."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise RequestError(400, "the body is empty; send the bytes of a JPEG or PNG image")
    try:
        with warnings.catch_warnings():
            # Pillow warns, then raises, on huge images; the explicit limit below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                width, height = img.size
                if width * height > max_pixels:
                    raise RequestError(
                        400,
                        f"image is {width}x{height} pixels, more than this server's limit of "
                        f"{max_pixels}",
                    )
                check_image_size(width, height, spec)
                return to_rgb(img)
    except DataError as exc:
        raise RequestError(400, str(exc)) from None
    except UnidentifiedImageError:
        if _is_other_image(data):
            raise RequestError(415, "only JPEG and PNG images are accepted") from None
        raise RequestError(400, "the body is not a decodable JPEG or PNG image") from None
    except Image.DecompressionBombError:
        raise RequestError(400, "image exceeds the decoder's pixel limit") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        # Truncated or corrupt data surfaces while decoding, after the header was accepted.
        raise RequestError(400, f"the image does not decode ({type(exc).__name__})") from None


def _is_other_image(data: bytes) -> bool:
    """True when Pillow recognises the bytes as an image in a format we do not accept."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)):
                return True
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError):
        return False
