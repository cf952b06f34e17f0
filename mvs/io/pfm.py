"""Portable Float Map (PFM) depth and image files.

A PFM stores rows bottom-up; the sign of the scale line gives the endianness (negative:
little-endian). ``read_pfm`` returns arrays top-down, as images are everywhere else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mvs.errors import MVSInputError


def read_pfm(path: str | Path) -> np.ndarray:
    """Read a PFM file.

    Returns:
        (H, W) float32 for ``Pf`` files, (H, W, 3) float32 for ``PF`` files, top row first.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise MVSInputError("PFM file not found", path) from None
    # The header is three whitespace-separated fields followed by one whitespace byte.
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4 and pos < len(data):
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        start = pos
        while pos < len(data) and not data[pos : pos + 1].isspace():
            pos += 1
        fields.append(data[start:pos])
        if len(fields) == 4:
            break
    if len(fields) < 4:
        raise MVSInputError("truncated PFM header", path)
    magic, width_s, height_s, scale_s = fields
    pos += 1  # the single whitespace byte that ends the header
    if magic == b"Pf":
        channels = 1
    elif magic == b"PF":
        channels = 3
    else:
        raise MVSInputError(f"not a PFM file (magic {magic[:8]!r}, expected 'Pf' or 'PF')", path)
    try:
        width, height, scale = int(width_s), int(height_s), float(scale_s)
    except ValueError:
        raise MVSInputError("malformed PFM header (size or scale is not a number)", path) from None
    if width <= 0 or height <= 0 or scale == 0:
        raise MVSInputError(f"invalid PFM header: {width}x{height}, scale {scale}", path)
    dtype = "<f4" if scale < 0 else ">f4"
    expected = width * height * channels * 4
    payload = data[pos : pos + expected]
    if len(payload) < expected:
        raise MVSInputError(
            f"PFM data truncated: {len(payload)} bytes for a {width}x{height}x{channels} map "
            f"(expected {expected})",
            path,
        )
    array = np.frombuffer(payload, dtype=dtype).astype(np.float32)
    shape = (height, width) if channels == 1 else (height, width, 3)
    return np.ascontiguousarray(np.flipud(array.reshape(shape)))


def write_pfm(path: str | Path, array: np.ndarray, little_endian: bool = True) -> None:
    """Write a (H, W) or (H, W, 3) array as PFM (float32, top row first in ``array``)."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 2:
        magic = b"Pf"
    elif array.ndim == 3 and array.shape[2] == 3:
        magic = b"PF"
    else:
        raise ValueError(f"PFM holds (H, W) or (H, W, 3) arrays, got shape {array.shape}")
    height, width = array.shape[:2]
    dtype = "<f4" if little_endian else ">f4"
    scale = -1.0 if little_endian else 1.0
    header = magic + b"\n" + f"{width} {height}\n{scale}\n".encode()
    Path(path).write_bytes(header + np.flipud(array).astype(dtype).tobytes())
