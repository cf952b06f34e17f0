"""The one camera type of the project.

Conventions (the only place they are defined):

* ``intrinsics`` K is 3x3 and maps camera coordinates to pixels, with pixel centres at
  integer coordinates (the MVSNet/OpenCV convention: pixel (0, 0) covers [-0.5, 0.5]).
* ``extrinsics`` E is 4x4 world-to-camera: ``x_cam = E @ x_world``. The camera looks
  down +z; depth is the z coordinate in the camera frame (not the ray length).
* Units are the scene's own (millimetres for DTU, metres for Middlebury, anything for
  COLMAP): nothing here assumes a scale.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mvs.errors import MVSInputError

# MVSNet's convention for cam files that give only DEPTH_MIN DEPTH_INTERVAL.
DEFAULT_DEPTH_NUM = 192


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated pinhole view: intrinsics, world-to-camera pose, image size, depth range.

    Args:
        intrinsics: (3, 3) K for an image of ``width`` x ``height`` pixels.
        extrinsics: (4, 4) world-to-camera rigid transform.
        width, height: image size in pixels that ``intrinsics`` refers to.
        depth_min, depth_max: range of scene depths seen by this view, in scene units.
        depth_num: number of depth planes the source file suggested (a hint, may be None).
        source: where the camera came from, used in error messages.
    """

    intrinsics: np.ndarray
    extrinsics: np.ndarray
    width: int
    height: int
    depth_min: float
    depth_max: float
    depth_num: int | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        K = np.asarray(self.intrinsics, dtype=np.float64)
        E = np.asarray(self.extrinsics, dtype=np.float64)
        object.__setattr__(self, "intrinsics", K)
        object.__setattr__(self, "extrinsics", E)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "depth_min", float(self.depth_min))
        object.__setattr__(self, "depth_max", float(self.depth_max))
        self._validate()

    def _fail(self, problem: str) -> None:
        raise MVSInputError(problem, self.source)

    def _validate(self) -> None:
        K, E = self.intrinsics, self.extrinsics
        if K.shape != (3, 3):
            self._fail(f"intrinsics must be 3x3, got shape {K.shape}")
        if E.shape != (4, 4):
            self._fail(f"extrinsics must be 4x4, got shape {E.shape}")
        if not np.all(np.isfinite(K)):
            self._fail("intrinsics contain NaN or infinity")
        if not np.all(np.isfinite(E)):
            self._fail("extrinsics contain NaN or infinity")
        if abs(np.linalg.det(K)) < 1e-12 or K[0, 0] <= 0 or K[1, 1] <= 0:
            self._fail(
                f"intrinsics are not invertible or have non-positive focal lengths "
                f"(fx={K[0, 0]:g}, fy={K[1, 1]:g})"
            )
        if not np.allclose(K[2], [0.0, 0.0, 1.0], atol=1e-6):
            self._fail(f"intrinsics last row must be [0 0 1], got {K[2].tolist()}")
        if not np.allclose(E[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
            self._fail(f"extrinsics last row must be [0 0 0 1], got {E[3].tolist()}")
        R = E[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) <= 0:
            self._fail("extrinsics rotation is not a proper rotation (R R^T != I or det(R) <= 0)")
        if self.width <= 0 or self.height <= 0:
            self._fail(f"image size must be positive, got {self.width}x{self.height}")
        if not (np.isfinite(self.depth_min) and np.isfinite(self.depth_max)):
            self._fail(f"depth range is not finite: [{self.depth_min}, {self.depth_max}]")
        if self.depth_min <= 0:
            self._fail(f"depth_min must be > 0, got {self.depth_min:g}")
        if self.depth_max <= self.depth_min:
            self._fail(
                f"depth range is empty or inverted: depth_min={self.depth_min:g}, "
                f"depth_max={self.depth_max:g}"
            )
        if self.depth_max / self.depth_min > 1e6:
            self._fail(
                f"depth range [{self.depth_min:g}, {self.depth_max:g}] spans more than 6 "
                "orders of magnitude; check the depth line of the camera file"
            )
        if self.depth_num is not None and self.depth_num < 2:
            self._fail(f"depth_num must be >= 2, got {self.depth_num}")

    # ------------------------------------------------------------------ geometry
    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) world-to-camera rotation."""
        return self.extrinsics[:3, :3]

    @property
    def translation(self) -> np.ndarray:
        """(3,) world-to-camera translation."""
        return self.extrinsics[:3, 3]

    @property
    def cam_to_world(self) -> np.ndarray:
        """(4, 4) camera-to-world transform (inverse of ``extrinsics``)."""
        inv = np.eye(4)
        inv[:3, :3] = self.rotation.T
        inv[:3, 3] = -self.rotation.T @ self.translation
        return inv

    @property
    def center(self) -> np.ndarray:
        """(3,) camera centre in world coordinates."""
        return -self.rotation.T @ self.translation

    @property
    def viewing_direction(self) -> np.ndarray:
        """(3,) unit optical axis (+z of the camera) in world coordinates."""
        return self.rotation[2].copy()

    @property
    def projection(self) -> np.ndarray:
        """(3, 4) projection matrix K [R | t]."""
        return self.intrinsics @ self.extrinsics[:3]

    @property
    def depth_interval(self) -> float:
        """Spacing of ``depth_num`` planes over the range (DEFAULT_DEPTH_NUM if unset)."""
        num = self.depth_num or DEFAULT_DEPTH_NUM
        return (self.depth_max - self.depth_min) / (num - 1)

    # ------------------------------------------------------------------ edits
    def resized(self, width: int, height: int) -> Camera:
        """The same view for an image resized to ``width`` x ``height``.

        Scales fx, cx by width ratio and fy, cy by height ratio, keeping pixel centres at
        integer coordinates (cx' = (cx + 0.5) * s - 0.5).
        """
        sx, sy = width / self.width, height / self.height
        K = self.intrinsics.copy()
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return replace(self, intrinsics=K, width=width, height=height)

    def cropped(self, x0: int, y0: int, width: int, height: int) -> Camera:
        """The same view for the crop ``image[y0:y0+height, x0:x0+width]``."""
        if x0 < 0 or y0 < 0 or x0 + width > self.width or y0 + height > self.height:
            self._fail(
                f"crop ({x0}, {y0}, {width}x{height}) falls outside the "
                f"{self.width}x{self.height} image"
            )
        K = self.intrinsics.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        return replace(self, intrinsics=K, width=width, height=height)

    def with_depth_range(
        self, depth_min: float, depth_max: float, depth_num: int | None = None
    ) -> Camera:
        return replace(self, depth_min=depth_min, depth_max=depth_max, depth_num=depth_num)

    # ------------------------------------------------------------------ torch / kornia
    def intrinsics_tensor(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """(3, 3) K as a tensor."""
        return torch.as_tensor(self.intrinsics, dtype=dtype, device=device)

    def extrinsics_tensor(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """(4, 4) world-to-camera E as a tensor."""
        return torch.as_tensor(self.extrinsics, dtype=dtype, device=device)

    def to_kornia(
        self, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ):
        """This camera as a batch-of-one ``kornia.geometry.camera.PinholeCamera``."""
        from kornia.geometry.camera import PinholeCamera

        K4 = torch.eye(4, dtype=dtype, device=device)
        K4[:3, :3] = self.intrinsics_tensor(device, dtype)
        return PinholeCamera(
            K4[None],
            self.extrinsics_tensor(device, dtype)[None],
            torch.tensor([self.height], dtype=dtype, device=device),
            torch.tensor([self.width], dtype=dtype, device=device),
        )

    def describe(self) -> str:
        return (
            f"{self.width}x{self.height}, f=({self.intrinsics[0, 0]:.1f}, "
            f"{self.intrinsics[1, 1]:.1f}), depth [{self.depth_min:g}, {self.depth_max:g}]"
        )


def stack_cameras(
    cameras: list[Camera],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack cameras into tensors.

    Returns:
        intrinsics: (N, 3, 3); extrinsics: (N, 4, 4) world-to-camera.
    """
    K = torch.stack([c.intrinsics_tensor(device, dtype) for c in cameras])
    E = torch.stack([c.extrinsics_tensor(device, dtype) for c in cameras])
    return K, E


def look_at(
    center: np.ndarray, target: np.ndarray, up: np.ndarray | None = None
) -> np.ndarray:
    """(4, 4) world-to-camera extrinsics of a camera at ``center`` looking at ``target``.

    The image's y axis points as close to ``-up`` as possible (images are stored top-down).
    """
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - center
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    R = np.stack([right, down, forward])  # rows: camera axes in world coordinates
    E = np.eye(4)
    E[:3, :3] = R
    E[:3, 3] = -R @ center
    return E

