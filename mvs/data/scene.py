"""A calibrated multi-view scene, and the readers of the on-disk layouts that hold one.

Layouts:

* MVSNet test layout (also written by ``mvs synth``)::

      SCENE/images/00000000.jpg   SCENE/cams/00000000_cam.txt   SCENE/pair.txt
      [SCENE/depths/00000000.pfm  SCENE/masks/00000000.png]     (ground truth, optional)

* DTU training layout (MVSNet's ``dtu_training``): one camera rig shared by all scans::

      ROOT/Rectified/scan{N}_train/rect_{v+1:03d}_{light}_r5000.png
      ROOT/Depths/scan{N}_train/depth_map_{v:04d}.pfm   [depth_visual_{v:04d}.png]
      ROOT/Cameras/train/{v:08d}_cam.txt   ROOT/Cameras/pair.txt

* BlendedMVS::

      ROOT/PID/blended_images/{v:08d}.jpg   ROOT/PID/cams/{v:08d}_cam.txt
      ROOT/PID/cams/pair.txt                ROOT/PID/rendered_depth_maps/{v:08d}.pfm

Every reader validates the whole scene up front (missing files, mismatched image sizes,
views referenced by pair.txt that do not exist) so bad input fails before any work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvs.cameras import Camera
from mvs.errors import MVSInputError
from mvs.io.cam import CamFile, DepthLine, read_cam
from mvs.io.images import IMAGE_SUFFIXES, image_size, read_image, read_mask
from mvs.io.pair import ViewPairs, read_pair
from mvs.io.pfm import read_pfm


@dataclass(frozen=True)
class View:
    """One view of a scene: its image, camera and optional ground truth."""

    id: int
    image_path: Path
    camera: Camera
    depth_path: Path | None = None
    mask_path: Path | None = None


@dataclass
class Scene:
    """A set of calibrated views with a view-selection list.

    ``pairs`` maps each reference view to its source views, best first.
    """

    root: Path
    views: dict[int, View]
    pairs: ViewPairs
    name: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def view_ids(self) -> list[int]:
        return sorted(self.views)

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) shared by every view."""
        camera = next(iter(self.views.values())).camera
        return camera.width, camera.height

    def source_views(self, reference: int, count: int | None = None, min_relative_score: float = 0.0) -> list[int]:
        """The best ``count`` source views of ``reference`` (all if None).

        With ``min_relative_score`` > 0, sources whose pair.txt score is below that
        fraction of the best source's score are left out (the best one always stays).
        Where pair.txt scores measure overlap, as in sparse captures whose ring
        neighbours beyond the nearest few share almost nothing with the reference, this
        keeps a view from being matched against photographs that do not see it; lists
        whose scores are ranks (DTU's 10..1) or are not positive lose nothing at the
        usual fractions.
        """
        pairs = self.pairs.get(reference, [])
        best = max((score for _, score in pairs), default=0.0)
        if min_relative_score > 0 and best > 0:
            pairs = [(s, score) for s, score in pairs if score >= min_relative_score * best]
        sources = [s for s, _ in pairs]
        return sources if count is None else sources[:count]

    def image(self, view_id: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB."""
        return read_image(self.views[view_id].image_path)

    def depth(self, view_id: int) -> np.ndarray:
        """(H, W) float32 ground-truth depth (0 = unknown)."""
        path = self.views[view_id].depth_path
        if path is None:
            raise MVSInputError(f"view {view_id} has no ground-truth depth", self.root)
        return read_pfm(path)

    def mask(self, view_id: int) -> np.ndarray:
        """(H, W) bool validity/object mask."""
        path = self.views[view_id].mask_path
        if path is None:
            raise MVSInputError(f"view {view_id} has no mask", self.root)
        return read_mask(path)

    def has_ground_truth(self) -> bool:
        return all(v.depth_path is not None for v in self.views.values())


def _view_id(path: Path) -> int | None:
    match = re.fullmatch(r"(\d+)", path.stem)
    return int(match.group(1)) if match else None


def _check_pairs(pairs: ViewPairs, known: set[int], pair_path: Path) -> None:
    for ref, sources in pairs.items():
        if ref not in known:
            raise MVSInputError(
                f"reference view {ref} has no image/camera in the scene", pair_path
            )
        for src, _ in sources:
            if src not in known:
                raise MVSInputError(
                    f"view {ref} lists source view {src}, which has no image/camera in the scene",
                    pair_path,
                )


def _check_same_size(sizes: dict[Path, tuple[int, int]]) -> tuple[int, int]:
    (first_path, first), *rest = sizes.items()
    for path, size in rest:
        if size != first:
            raise MVSInputError(
                f"image is {size[0]}x{size[1]} but {first_path.name} is {first[0]}x{first[1]}; "
                "all views of a scene must share one size",
                path,
            )
    return first


def _camera_for_image(cam: CamFile, width: int, height: int, image_path: Path) -> Camera:
    """Tie a cam file to its image, checking that the intrinsics plausibly belong to it."""
    cx, cy = cam.intrinsics[0, 2], cam.intrinsics[1, 2]
    if not (0 <= cx <= width and 0 <= cy <= height):
        raise MVSInputError(
            f"principal point ({cx:.1f}, {cy:.1f}) lies outside the {width}x{height} image "
            f"{image_path.name}; are the intrinsics for another resolution?",
            cam.path,
        )
    return cam.to_camera(width, height)


def load_mvsnet_scene(
    root: str | Path,
    depth_line: DepthLine | str = DepthLine.INTERVAL,
    require_pairs: bool = True,
) -> Scene:
    """Load a scene in the MVSNet test layout (``images/``, ``cams/``, ``pair.txt``).

    Ground-truth ``depths/*.pfm`` and ``masks/*.png`` are attached when present.
    """
    root = Path(root)
    if not root.is_dir():
        raise MVSInputError("scene folder not found", root)
    images_dir, cams_dir, pair_path = root / "images", root / "cams", root / "pair.txt"
    for needed in (images_dir, cams_dir):
        if not needed.is_dir():
            raise MVSInputError(
                "missing folder; an MVSNet-layout scene has images/, cams/ and pair.txt", needed
            )
    images = {
        vid: p
        for p in sorted(images_dir.iterdir())
        if p.suffix.lower() in IMAGE_SUFFIXES and (vid := _view_id(p)) is not None
    }
    if not images:
        raise MVSInputError("no images (expected files like 00000000.jpg)", images_dir)
    cams = {
        int(m.group(1)): p
        for p in sorted(cams_dir.glob("*_cam.txt"))
        if (m := re.fullmatch(r"(\d+)_cam\.txt", p.name))
    }
    for vid, image_path in images.items():
        if vid not in cams:
            raise MVSInputError(
                f"image {image_path.name} has no camera file {vid:08d}_cam.txt", cams_dir
            )
    for vid, cam_path in cams.items():
        if vid not in images:
            raise MVSInputError(f"camera {cam_path.name} has no image", images_dir)

    sizes = {images[v]: image_size(images[v]) for v in images}
    width, height = _check_same_size(sizes)
    views = {}
    for vid, image_path in images.items():
        cam = read_cam(cams[vid], depth_line)
        depth_path = root / "depths" / f"{vid:08d}.pfm"
        mask_path = root / "masks" / f"{vid:08d}.png"
        views[vid] = View(
            vid,
            image_path,
            _camera_for_image(cam, width, height, image_path),
            depth_path if depth_path.is_file() else None,
            mask_path if mask_path.is_file() else None,
        )

    if pair_path.is_file():
        pairs = read_pair(pair_path)
        _check_pairs(pairs, set(views), pair_path)
    elif require_pairs:
        raise MVSInputError("missing pair.txt (view selection)", pair_path)
    else:
        pairs = {}
    return Scene(root, views, pairs, name=root.name)


# ----------------------------------------------------------------------------- DTU training


def _dtu_intrinsics_scale(cam: CamFile, width: int) -> float:
    """Factor that brings DTU training intrinsics to the image resolution.

    MVSNet's published ``Cameras/train`` files hold intrinsics for the quarter-resolution
    depth maps (160x128) while the images are 640x512; ``mvs synth`` writes them for the
    image resolution. The principal point, which DTU keeps near the image centre, tells
    which: the factor is the power of two that brings 2*cx closest to the image width.
    """
    ratio = width / (2.0 * cam.intrinsics[0, 2])
    return float(2 ** round(math.log2(ratio))) if ratio > 0 else 1.0


@dataclass
class DTUTrainLayout:
    """The DTU training layout; ``scene(scan, light)`` gives one scan under one lighting."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        for sub in ("Rectified", "Cameras"):
            if not (self.root / sub).is_dir():
                raise MVSInputError(
                    f"missing {sub}/; not a DTU training layout "
                    "(Rectified/, Depths/, Cameras/train/, Cameras/pair.txt)",
                    self.root / sub,
                )

    @property
    def scans(self) -> list[int]:
        found = []
        for p in (self.root / "Rectified").iterdir():
            if m := re.fullmatch(r"scan(\d+)_train", p.name):
                found.append(int(m.group(1)))
        return sorted(found)

    def lights(self, scan: int) -> list[int]:
        folder = self.root / "Rectified" / f"scan{scan}_train"
        return sorted(
            {int(m.group(1)) for p in folder.glob("rect_001_*_r5000.png")
             if (m := re.fullmatch(r"rect_001_(\d+)_r5000\.png", p.name))}
        )

    def scene(self, scan: int, light: int = 3, depth_line: DepthLine | str = DepthLine.INTERVAL) -> Scene:
        rect = self.root / "Rectified" / f"scan{scan}_train"
        depths = self.root / "Depths" / f"scan{scan}_train"
        cams_dir = self.root / "Cameras" / "train"
        pair_path = self.root / "Cameras" / "pair.txt"
        if not rect.is_dir():
            raise MVSInputError(f"scan {scan} not found", rect)
        pairs = read_pair(pair_path)
        view_ids = sorted(set(pairs) | {s for srcs in pairs.values() for s, _ in srcs})
        image_paths = {v: rect / f"rect_{v + 1:03d}_{light}_r5000.png" for v in view_ids}
        for v, p in image_paths.items():
            if not p.is_file():
                raise MVSInputError(f"view {v} (light {light}) is listed in pair.txt but its image is missing", p)
        width, height = _check_same_size({p: image_size(p) for p in image_paths.values()})
        views = {}
        for v in view_ids:
            cam = read_cam(cams_dir / f"{v:08d}_cam.txt", depth_line)
            scale = _dtu_intrinsics_scale(cam, width)
            if scale != 1.0:
                # MVSNet made these files by multiplying K by 1/4; undo it the same way.
                K = cam.intrinsics.copy()
                K[:2] *= scale
                cam = CamFile(K, cam.extrinsics, cam.depth_min, cam.depth_max, cam.depth_num, cam.path)
            camera = _camera_for_image(cam, width, height, image_paths[v])
            depth_path = depths / f"depth_map_{v:04d}.pfm"
            mask_path = depths / f"depth_visual_{v:04d}.png"
            views[v] = View(
                v,
                image_paths[v],
                camera,
                depth_path if depth_path.is_file() else None,
                mask_path if mask_path.is_file() else None,
            )
        return Scene(self.root, views, pairs, name=f"scan{scan}", meta={"scan": scan, "light": light})


# ----------------------------------------------------------------------------- BlendedMVS


def load_blendedmvs_scene(root: str | Path, depth_line: DepthLine | str = DepthLine.INTERVAL) -> Scene:
    """Load one BlendedMVS scene folder (``blended_images/``, ``cams/``, ``rendered_depth_maps/``)."""
    root = Path(root)
    images_dir, cams_dir = root / "blended_images", root / "cams"
    for needed in (images_dir, cams_dir):
        if not needed.is_dir():
            raise MVSInputError("missing folder; not a BlendedMVS scene", needed)
    pair_path = cams_dir / "pair.txt"
    pairs = read_pair(pair_path)
    view_ids = sorted(set(pairs) | {s for srcs in pairs.values() for s, _ in srcs})
    image_paths = {v: images_dir / f"{v:08d}.jpg" for v in view_ids}
    for v, p in image_paths.items():
        if not p.is_file():
            raise MVSInputError(f"view {v} is listed in pair.txt but its image is missing", p)
    width, height = _check_same_size({p: image_size(p) for p in image_paths.values()})
    views = {}
    for v in view_ids:
        cam = read_cam(cams_dir / f"{v:08d}_cam.txt", depth_line)
        depth_path = root / "rendered_depth_maps" / f"{v:08d}.pfm"
        views[v] = View(
            v,
            image_paths[v],
            _camera_for_image(cam, width, height, image_paths[v]),
            depth_path if depth_path.is_file() else None,
        )
    return Scene(root, views, pairs, name=root.name)


def load_scene(root: str | Path, depth_line: DepthLine | str = DepthLine.INTERVAL) -> Scene:
    """Load a scene folder in the MVSNet test layout or a BlendedMVS scene folder."""
    root = Path(root)
    if (root / "blended_images").is_dir():
        return load_blendedmvs_scene(root, depth_line)
    return load_mvsnet_scene(root, depth_line)
