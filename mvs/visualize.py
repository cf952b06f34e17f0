"""Pictures people would rather look at than read: colour-mapped depth, cloud renderings."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import colormaps

from mvs.cameras import Camera


def colorize(
    values: np.ndarray,
    valid: np.ndarray | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
    background: tuple[int, int, int] = (0, 0, 0),
) -> np.ndarray:
    """(H, W) values -> (H, W, 3) uint8 RGB through a colormap; invalid pixels get ``background``.

    The range defaults to the 2nd–98th percentile of valid values, so outliers do not wash
    out the picture.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(values) if valid is None else (np.asarray(valid, bool) & np.isfinite(values))
    if valid.any():
        lo, hi = np.percentile(values[valid], [2, 98])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    else:
        vmin, vmax = 0.0, 1.0
    scaled = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    rgb = (colormaps[cmap](np.nan_to_num(scaled))[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = background
    return rgb


def render_point_cloud(
    points: np.ndarray,
    colors: np.ndarray | None,
    camera: Camera,
    point_size: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Render (N, 3) world points into ``camera`` with a z-buffer (nearest point wins).

    Args:
        points: (N, 3) world coordinates.
        colors: (N, 3) uint8 RGB, or None to colour by depth.
        camera: the viewpoint; the image has its size.
        point_size: splat size in pixels (square).

    Returns:
        (H, W, 3) uint8 RGB.
    """
    height, width = camera.height, camera.width
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    if len(points) == 0:
        return image
    # Column by column: (N, 3) @ (3, 3) products are slow on millions of points.
    R, t, K = camera.rotation, camera.translation, camera.intrinsics
    x, y, z = (points[:, 0] * R[i, 0] + points[:, 1] * R[i, 1] + points[:, 2] * R[i, 2] + t[i] for i in range(3))
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round((K[0, 0] * x + K[0, 1] * y) / z + K[0, 2])
        v = np.round(K[1, 1] * y / z + K[1, 2])
    ok = np.flatnonzero((z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height))
    if colors is None:
        colors = colorize(z[None, :])[0]
    colors = np.asarray(colors)
    # Keep only the nearest point at each pixel centre (what the z-buffer would show there),
    # so millions of points cost one pass; then draw farthest first.
    key = v[ok].astype(np.int64) * width + u[ok].astype(np.int64)
    nearest = np.full(width * height, np.inf)
    np.minimum.at(nearest, key, z[ok])
    front = ok[z[ok] <= nearest[key]]
    order = front[np.argsort(-z[front])]
    u, v, colors = u[order].astype(np.int64), v[order].astype(np.int64), colors[order]
    half = point_size // 2
    for dy in range(-half, point_size - half):
        for dx in range(-half, point_size - half):
            uu, vv = u + dx, v + dy
            ok = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
            image[vv[ok], uu[ok]] = colors[ok]
    return image


def save_depth_preview(
    path: str,
    depth: np.ndarray,
    confidence: np.ndarray | None = None,
    image: np.ndarray | None = None,
    depth_range: tuple[float, float] | None = None,
    title: str = "",
    unit: str = "",
) -> None:
    """Side-by-side PNG: [image,] colour-mapped depth with a colour bar[, confidence]."""
    panels = (image is not None) + 1 + (confidence is not None)
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.6), squeeze=False)
    axes = list(axes[0])
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(image)
        ax.set_title("image")
        ax.axis("off")
    ax = axes.pop(0)
    valid = depth > 0
    vmin, vmax = depth_range if depth_range else (
        np.percentile(depth[valid], [2, 98]) if valid.any() else (0, 1)
    )
    shown = np.where(valid, depth, np.nan)
    im = ax.imshow(shown, cmap="turbo", vmin=vmin, vmax=vmax)
    ax.set_title("depth" + (f" ({unit})" if unit else ""))
    ax.axis("off")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if confidence is not None:
        ax = axes.pop(0)
        im = ax.imshow(confidence, cmap="viridis", vmin=0, vmax=1)
        ax.set_title("confidence")
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
