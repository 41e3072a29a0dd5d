"""Files a hostile or careless user feeds the tools: decompression bombs, 16-bit images."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def write_bomb_png(path: Path, width: int = 30000, height: int = 30000) -> Path:
    """A small PNG (about 100 KB) whose header declares ``width x height`` 8-bit grey pixels:
    decoding it would take gigabytes. 30000 x 30000 is over twice Pillow's limit (an error);
    10000 x 10000 lies between the limit and twice it (Pillow only warns)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 100, 9)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows)
    path.write_bytes(png + _chunk(b"IEND", b""))
    return path


def photo_as_16bit(channel: np.ndarray) -> np.ndarray:
    """An 8-bit channel spread over the 16-bit range the way scanners and cameras do
    (v * 257: 0 -> 0, 255 -> 65535), plus low-byte noise that must not change the high byte."""
    noise = np.random.default_rng(0).integers(0, 256, channel.shape, dtype=np.uint32)
    return (channel.astype(np.uint32) * 256 + noise).astype(np.uint16)
