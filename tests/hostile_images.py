"""Images whose resize explodes (issue 23, class 6): valid, tiny files of absurd shape, and a guard
that turns an allocation the code under test should never ask for into a test failure."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hostile_files import _chunk

# Far above any bound the code keeps (the resize output is capped well below it), far below what
# would hurt this machine: the unfixed code fails a test here instead of exhausting memory.
GUARD_PIXELS = 100_000_000
GUARD_ELEMENTS = 400_000_000


def write_strip_png(path: Path, width: int, height: int) -> Path:
    """A complete, decodable 8-bit grey PNG of ``width x height`` black pixels, a few KB on disk
    even for 1 x 5,000,000 or 40,000,000 x 1 (the rows compress to almost nothing)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte "none" and the row's pixels
    rows_per_chunk = max(1, (1 << 20) // len(row))
    data = []
    for start in range(0, height, rows_per_chunk):
        data.append(packer.compress(row * min(rows_per_chunk, height - start)))
    data.append(packer.flush())
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", b"".join(data))
    path.write_bytes(png + _chunk(b"IEND", b""))
    return path


def _guarded(
    original: Callable[..., Any], too_big: Callable[..., str | None]
) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        problem = too_big(*args, **kwargs)
        if problem:
            raise AssertionError(f"the code under test asked for {problem}")
        return original(*args, **kwargs)

    return call


def _resize_too_big(_img: Any, size: Any, *args: Any, **kwargs: Any) -> str | None:
    width, height = size
    return f"a {width}x{height} resize" if width * height > GUARD_PIXELS else None


def _tensor_too_big(*size: Any, **kwargs: Any) -> str | None:
    dims = size[0] if len(size) == 1 and isinstance(size[0], tuple | list) else size
    count = 1
    for d in dims:
        count *= int(d)
    return f"a tensor of {count:,} elements" if count > GUARD_ELEMENTS else None


@pytest.fixture
def memory_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's resize and ``torch.randn`` refuse outputs that would take gigabytes."""
    import torch
    from PIL import Image

    monkeypatch.setattr(Image.Image, "resize", _guarded(Image.Image.resize, _resize_too_big))
    monkeypatch.setattr(torch, "randn", _guarded(torch.randn, _tensor_too_big))
