"""Surface appearance: albedo textures from photographs bundled with scikit-image, mixed
with procedural noise, and their triplanar mapping onto world positions.

Only image files that ship inside the scikit-image wheel are read, straight from its
``data`` folder, so nothing is ever downloaded. Textures hold linear albedo in [0, 1].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

TEXTURE_SIZE = 256

# Photographs in skimage/data/ that are part of the wheel (no pooch download).
COLOR_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg",
                "retina.jpg", "ihc.png", "motorcycle_left.png")
GREY_PHOTOS = ("brick.png", "camera.png", "grass.png", "gravel.png", "moon.png", "coins.png",
               "page.png", "text.png")
GROUND_PHOTOS = ("brick.png", "gravel.png", "grass.png", "coffee.png", "moon.png", "camera.png")


def _skimage_data_dir() -> Path | None:
    try:
        import skimage.data
    except ImportError:
        return None
    return Path(skimage.data.__file__).parent


@functools.cache
def _load_photo(name: str) -> np.ndarray | None:
    """(H, W, 3) float32 linear RGB of a bundled photo, or None if it is not there."""
    folder = _skimage_data_dir()
    if folder is None or not (folder / name).is_file():
        return None
    # Pillow, not opencv: some of these PNGs carry ICC profiles that make libpng print warnings.
    try:
        with Image.open(folder / name) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except OSError:
        return None
    rgb = rgb**2.2  # sRGB-ish to linear
    rgb.setflags(write=False)
    return rgb


def available_photos(names: tuple[str, ...]) -> list[str]:
    return [n for n in names if _load_photo(n) is not None]


def fractal_noise(rng: np.random.Generator, size: int, octaves: int = 5, base: int = 4,
                  persistence: float = 0.55) -> np.ndarray:
    """(size, size) float32 multi-octave value noise, normalised to zero mean, unit std."""
    out = np.zeros((size, size), np.float32)
    amplitude, cells = 1.0, base
    for _ in range(octaves):
        grid = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
        out += amplitude * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        amplitude *= persistence
        cells = min(cells * 2, size)
    out -= out.mean()
    out /= out.std() + 1e-6
    return out


def _random_color(rng: np.random.Generator, saturation: tuple[float, float] = (0.2, 0.8),
                  value: tuple[float, float] = (0.35, 0.9)) -> np.ndarray:
    """A random linear RGB colour via HSV."""
    h = rng.uniform(0, 360)
    s = rng.uniform(*saturation)
    v = rng.uniform(*value)
    hsv = np.array([[[h / 2.0, s * 255.0, v * 255.0]]], np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0
    return rgb**2.2


def _photo_crop(rng: np.random.Generator, name: str, size: int) -> np.ndarray:
    photo = _load_photo(name)
    assert photo is not None
    h, w = photo.shape[:2]
    side = int(rng.uniform(0.35, 0.9) * min(h, w))
    y0 = int(rng.integers(0, h - side + 1))
    x0 = int(rng.integers(0, w - side + 1))
    crop = photo[y0 : y0 + side, x0 : x0 + side]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    k = int(rng.integers(0, 4))
    return np.ascontiguousarray(np.rot90(crop, k))


def _normalise_albedo(tex: np.ndarray, low: float = 0.03, high: float = 0.85) -> np.ndarray:
    """Fit the albedo's 0.5..99.5 percentile range inside [low, high] (shrink, then shift)."""
    lo, hi = (float(v) for v in np.percentile(tex, [0.5, 99.5]))
    if hi - lo > high - low:
        tex = low + (tex - lo) * ((high - low) / (hi - lo))
    elif lo < low:
        tex = tex + (low - lo)
    elif hi > high:
        tex = tex - (hi - high)
    return np.clip(tex, 0.01, 0.95).astype(np.float32)


@dataclass(frozen=True)
class TextureInfo:
    """How a texture was made (recorded in scene.json)."""

    source: str  # photo file name, or "procedural"
    low_texture: bool


def object_texture(rng: np.random.Generator, low_texture: bool = False,
                   size: int = TEXTURE_SIZE) -> tuple[np.ndarray, TextureInfo]:
    """(size, size, 3) linear albedo of an object, and how it was made."""
    base = _random_color(rng)
    if low_texture:
        # Nearly uniform paint: a faint, very low-frequency variation only.
        noise = fractal_noise(rng, size, octaves=2, base=2)
        tex = base[None, None, :] * (1.0 + 0.015 * noise[..., None])
        return _normalise_albedo(tex), TextureInfo("uniform", True)
    photos = available_photos(COLOR_PHOTOS + GREY_PHOTOS)
    use_photo = bool(photos) and rng.uniform() < 0.75
    noise = fractal_noise(rng, size, octaves=6, base=int(rng.integers(3, 8)))
    second = _random_color(rng)
    blotch = 1.0 / (1.0 + np.exp(-3.0 * noise))[..., None]
    procedural = base[None, None, :] * (1 - blotch) + second[None, None, :] * blotch
    fine = fractal_noise(rng, size, octaves=3, base=32)[..., None]
    procedural = procedural * (1.0 + 0.15 * fine)
    if not use_photo:
        return _normalise_albedo(procedural), TextureInfo("procedural", False)
    name = photos[int(rng.integers(0, len(photos)))]
    photo = _photo_crop(rng, name, size)
    if name in GREY_PHOTOS:
        photo = photo.mean(axis=2, keepdims=True) * (base / max(base.max(), 1e-3))[None, None, :] * 1.3
    mix = rng.uniform(0.0, 0.35)
    tex = (1 - mix) * photo + mix * procedural
    return _normalise_albedo(tex), TextureInfo(name, False)


def ground_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> tuple[np.ndarray, TextureInfo]:
    """(size, size, 3) linear albedo of the table."""
    photos = available_photos(GROUND_PHOTOS)
    tint = _random_color(rng, saturation=(0.05, 0.4), value=(0.5, 0.9))
    noise = fractal_noise(rng, size, octaves=6, base=4)[..., None]
    if photos and rng.uniform() < 0.85:
        name = photos[int(rng.integers(0, len(photos)))]
        photo = _photo_crop(rng, name, size).mean(axis=2, keepdims=True)
        tex = photo * tint[None, None, :] * 1.4 * (1.0 + 0.2 * noise)
        return _normalise_albedo(tex, 0.04, 0.7), TextureInfo(name, False)
    tex = tint[None, None, :] * (0.55 + 0.25 * noise) * (1.0 + 0.1 * fractal_noise(rng, size, 2, 64)[..., None])
    return _normalise_albedo(tex, 0.04, 0.7), TextureInfo("procedural", False)


class MipTexture:
    """A texture with its mip pyramid, tiled with mirroring (no seams), sampled trilinearly."""

    def __init__(self, texture: np.ndarray):
        self.levels = [np.ascontiguousarray(texture, dtype=np.float32)]
        while self.levels[-1].shape[0] > 8:
            self.levels.append(cv2.pyrDown(self.levels[-1]))

    @property
    def size(self) -> int:
        return self.levels[0].shape[0]

    def sample(self, x: np.ndarray, y: np.ndarray, lod: np.ndarray | None = None) -> np.ndarray:
        """(N, 3) values at level-0 texel coordinates (x, y) (texel centres at +0.5), blending
        the two mip levels around ``lod`` (log2 of the footprint in texels; None: level 0)."""
        if lod is None:
            return _remap(self.levels[0], x, y)
        top = len(self.levels) - 1
        lod = np.clip(lod, 0.0, top)
        base = np.floor(lod).astype(np.int64)
        frac = (lod - base).astype(np.float32)
        present = np.flatnonzero(np.bincount(base, minlength=top + 1))
        out = None if len(present) == 1 else np.empty((len(x), 3), np.float32)
        for level in present:
            sel = slice(None) if out is None else np.flatnonzero(base == level)
            value = self._level(level, x[sel], y[sel])
            if level < top:
                f = frac[sel]
                blend = f > 0
                if blend.all():
                    value += (self._level(level + 1, x[sel], y[sel]) - value) * f[:, None]
                elif blend.any():
                    b = np.flatnonzero(blend)
                    xb, yb = x[sel][b], y[sel][b]
                    value[b] += (self._level(level + 1, xb, yb) - value[b]) * f[b, None]
            if out is None:
                return value
            out[sel] = value
        return out

    def _level(self, level: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        scale = np.float32(0.5**level)
        return _remap(self.levels[level], x * scale, y * scale)


_REMAP_COLUMNS = 2048


def _remap(image: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookups of a mirrored-tiled image at texel coordinates (x, y) (centres +0.5)."""
    size = image.shape[0]
    n = len(x)
    rows = max(1, -(-n // _REMAP_COLUMNS))
    map_x = np.zeros(rows * _REMAP_COLUMNS, np.float32)
    map_y = np.zeros(rows * _REMAP_COLUMNS, np.float32)
    np.subtract(x, 0.5, out=map_x[:n])
    np.subtract(y, 0.5, out=map_y[:n])
    # opencv's fixed-point maps hold +-32767 texels; reduce by whole mirror periods (2 * size).
    for m in (map_x, map_y):
        if n and np.abs(m).max() > 30000:
            np.mod(m, 2 * size, out=m)
    out = cv2.remap(image, map_x.reshape(rows, -1), map_y.reshape(rows, -1), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REFLECT)
    return out.reshape(-1, 3)[:n]


def sample_triplanar(texture: MipTexture, points: np.ndarray, normals: np.ndarray,
                     texel_mm: float, rotation: np.ndarray, offset: np.ndarray,
                     planar_only: bool = False, footprint_mm: np.ndarray | None = None) -> np.ndarray:
    """(N, 3) albedo at world ``points`` with unit ``normals`` by triplanar projection.

    The texture is projected along the three axes of a rotated frame (``rotation`` @ p +
    ``offset``) and blended with weights |n|^4; ``planar_only`` projects along z only
    (the table). ``footprint_mm``: size of the area each sample stands for, which picks
    the mip level (None: no filtering).
    """
    rotation = rotation.astype(np.float32)
    local = (np.einsum("ij,kj->ik", points.astype(np.float32), rotation) + offset.astype(np.float32))
    local /= np.float32(texel_mm)
    lod = None
    if footprint_mm is not None:
        lod = np.log2(np.maximum(footprint_mm / np.float32(texel_mm), 1.0)).astype(np.float32)
    if planar_only:
        return texture.sample(local[:, 0], local[:, 1], lod)
    weights = np.einsum("ij,kj->ik", normals.astype(np.float32), rotation) ** 2
    weights *= weights  # |n|^4
    weights /= weights.sum(axis=1, keepdims=True) + np.float32(1e-12)
    out = weights[:, 0:1] * texture.sample(local[:, 1], local[:, 2], lod)
    out += weights[:, 1:2] * texture.sample(local[:, 2], local[:, 0], lod)
    out += weights[:, 2:3] * texture.sample(local[:, 0], local[:, 1], lod)
    return out
