"""Images and masks through opencv. Arrays are RGB, top row first.

Pixels are read as stored: an EXIF orientation tag is ignored (opencv would otherwise
rotate photographs from phones), because camera calibrations (COLMAP's included) refer
to the stored pixel grid, and so does the size read from the header.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from mvs.errors import MVSInputError

_AS_STORED = cv2.IMREAD_IGNORE_ORIENTATION

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB."""
    path = Path(path)
    if not path.is_file():
        raise MVSInputError("image not found", path)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | _AS_STORED)
    if image is None:
        raise MVSInputError("not a readable image (corrupt or unsupported format)", path)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_image(data: bytes, name: str = "<upload>") -> np.ndarray:
    """Decode encoded image bytes as (H, W, 3) uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR | _AS_STORED)
    if image is None:
        raise MVSInputError("not a readable image (corrupt, truncated or unsupported)", name)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise MVSInputError("image not found", path) from None
    except Exception as error:  # PIL raises several types for corrupt files
        raise MVSInputError(f"not a readable image ({error})", path) from None


def write_image(path: str | Path, image: np.ndarray, jpeg_quality: int = 95) -> None:
    """Write (H, W, 3) uint8 RGB or (H, W) uint8 grey."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"write_image takes uint8 arrays, got {image.dtype}")
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if str(path).lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(str(path), bgr, params):
        raise OSError(f"{path}: could not write image")


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask as (H, W) bool (any non-zero pixel is inside)."""
    path = Path(path)
    if not path.is_file():
        raise MVSInputError("mask not found", path)
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | _AS_STORED)
    if mask is None:
        raise MVSInputError("not a readable mask image", path)
    return mask > 127


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a (H, W) bool mask as an 8-bit PNG (255 inside)."""
    write_image(path, np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
