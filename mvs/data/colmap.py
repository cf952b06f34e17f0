"""``mvs import-colmap``: a COLMAP sparse model and its images as an MVSNet test-layout scene.

What it writes into ``OUT``::

    images/{v:08d}.jpg        the undistorted photographs, resized to --max-dim
    cams/{v:08d}_cam.txt      world-to-camera E, K for the written image, per-view depth range
    pair.txt                  source views by triangulation angle over shared sparse points
    sparse_points.ply         COLMAP's 3D points (coloured), to check a reconstruction against
    colmap_import.json        view id -> COLMAP image name and id, points, depth range, settings

Conventions converted here (the only place that knows COLMAP's):

* Pose: COLMAP's (QW QX QY QZ TX TY TZ) is the world-to-camera rotation (Hamilton
  quaternion) and translation, the same direction as ``Camera.extrinsics``:
  ``E = [[R(q), t], [0, 1]]``.
* Pixels: COLMAP puts the centre of the top-left pixel at (0.5, 0.5); this project puts
  it at (0, 0) (``mvs.cameras``, ``mvs.geometry.pixel_grid``). So ``cx = cx_colmap - 0.5``
  and ``cy = cy_colmap - 0.5``; focal lengths are unchanged.
* Camera models: only PINHOLE (fx fy cx cy) and SIMPLE_PINHOLE (f cx cy) describe
  undistorted images. Any other model means the images are distorted: the import stops and
  points at ``colmap image_undistorter``, whose output model (``dense/sparse``) and images
  (``dense/images``) are what this command reads.
* Units: COLMAP's (arbitrary). Each view's depth range comes from the depths of the
  sparse points it observes: the ``depth_percentiles`` of those depths, widened by
  ``depth_margin`` (``min * (1 - m)``, ``max * (1 + m)``, the form of the synthetic training
  data's ``depth_margin``). Nothing assumes a scale.

A view observing fewer than ``min_points`` points has no usable depth range: the import
fails naming those images, unless ``skip_sparse_views`` drops them with a warning.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from mvs.cameras import Camera
from mvs.data.dataset import fit_size
from mvs.data.view_selection import select_views
from mvs.errors import MVSInputError
from mvs.io import write_cam, write_image, write_pair, write_point_cloud
from mvs.io.colmap import (
    ColmapCamera,
    ColmapImage,
    ColmapModel,
    qvec_to_rotation,
    read_colmap_model,
)
from mvs.io.images import image_size

UNDISTORTED_MODELS = ("PINHOLE", "SIMPLE_PINHOLE")
# Sizes differing by less than this relative aspect ratio are resized to one common size
# (rounding in COLMAP's undistorter leaves a pixel here and there); larger differences stop.
ASPECT_TOLERANCE = 0.01


@dataclass
class ColmapImportConfig:
    """Options of ``import_colmap``.

    Attributes:
        max_dim: longer image side written, in pixels (None: keep COLMAP's size). Images are
            only ever made smaller.
        depth_num: DEPTH_NUM written to the cam files (number of depth hypotheses suggested
            to MVSNet-style readers).
        depth_percentiles: percentiles (0..100) of a view's sparse point depths taken as its
            nearest and farthest depth, robust to stray points.
        depth_margin: relative widening of that range (0.2: min * 0.8, max * 1.2). Sparse
            points concentrate where views overlap and thin out towards the image borders,
            so their percentiles fall short of the nearest and farthest surfaces: on the
            synthetic test scene, 0.1 left up to 1 % of a view's true depths outside the
            range, 0.2 at most 0.1 %, with a range about as wide as the generator's own.
        min_points: fewest observed points that give a view a depth range.
        skip_sparse_views: drop views with fewer than ``min_points`` points (with a
            warning) instead of failing.
        num_sources: source views per reference in pair.txt.
        max_pair_points: view selection scores at most this many points (a seeded random
            subset), keeping its (views x points) matrices in memory; depth ranges always use
            every point.
        jpeg_quality: quality of the written JPEGs.
        overwrite: replace the images/cams a previous import wrote into ``out``.
    """

    max_dim: int | None = 1600
    depth_num: int = 192
    depth_percentiles: tuple[float, float] = (1.0, 99.0)
    depth_margin: float = 0.2
    min_points: int = 10
    skip_sparse_views: bool = False
    num_sources: int = 10
    max_pair_points: int = 100_000
    jpeg_quality: int = 95
    overwrite: bool = False

    def validate(self) -> None:
        def fail(problem: str) -> None:
            raise MVSInputError(f"invalid import option: {problem}")

        if self.max_dim is not None and self.max_dim < 16:
            fail(f"max_dim must be at least 16 pixels, got {self.max_dim}")
        if self.depth_num < 2:
            fail(f"depth_num must be >= 2, got {self.depth_num}")
        low, high = self.depth_percentiles
        if not 0.0 <= low < high <= 100.0:
            fail(f"depth_percentiles must satisfy 0 <= low < high <= 100, got ({low}, {high})")
        if not 0.0 <= self.depth_margin < 1.0:
            fail(f"depth_margin must be in [0, 1), got {self.depth_margin}")
        if self.min_points < 2:
            fail(f"min_points must be >= 2, got {self.min_points}")
        if self.num_sources < 1:
            fail(f"num_sources must be >= 1, got {self.num_sources}")


# ----------------------------------------------------------------------------- conventions
def colmap_intrinsics(camera: ColmapCamera, path: Path | None = None) -> np.ndarray:
    """(3, 3) K in this project's pixel convention from a PINHOLE / SIMPLE_PINHOLE camera.

    Raises:
        MVSInputError: for any model with lens distortion, pointing at COLMAP's undistorter.
    """
    p = camera.params
    if camera.model == "PINHOLE":
        fx, fy, cx, cy = p
    elif camera.model == "SIMPLE_PINHOLE":
        fx, cx, cy = p
        fy = fx
    else:
        raise MVSInputError(
            f"camera {camera.id} uses the {camera.model} model, which has lens distortion; "
            f"mvs needs undistorted images with {' or '.join(UNDISTORTED_MODELS)} cameras. Run "
            "`colmap image_undistorter --image_path IMAGES --input_path SPARSE --output_path "
            "DENSE` and import DENSE/sparse with DENSE/images",
            path,
        )
    # COLMAP: top-left pixel centre at (0.5, 0.5); here at (0, 0).
    return np.array([[fx, 0.0, cx - 0.5], [0.0, fy, cy - 0.5], [0.0, 0.0, 1.0]])


def colmap_extrinsics(image: ColmapImage) -> np.ndarray:
    """(4, 4) world-to-camera E of a COLMAP image (its pose is already world-to-camera)."""
    E = np.eye(4)
    E[:3, :3] = qvec_to_rotation(image.qvec)
    E[:3, 3] = image.tvec
    return E


def view_depth_range(depths: np.ndarray, percentiles: tuple[float, float], margin: float) -> tuple[float, float]:
    """(depth_min, depth_max) of a view from the (M,) depths of the points it observes.

    The ``percentiles`` of ``depths`` widened by ``margin``: ``(low * (1 - margin),
    high * (1 + margin))``, in the depths' own units.
    """
    low, high = np.percentile(np.asarray(depths, dtype=np.float64), percentiles)
    low, high = float(low) * (1.0 - margin), float(high) * (1.0 + margin)
    if high <= low:  # every point at one depth (a fronto-parallel plane): keep a range
        high = low * (1.0 + 2.0 * max(margin, 0.01))
    return low, high


# ----------------------------------------------------------------------------- the import
@dataclass
class _View:
    image: ColmapImage
    camera: Camera  # at COLMAP's image size, with the final depth range
    path: Path  # the source photograph
    points: np.ndarray  # (M,) indices into the model's points this view observes (in front)


def _observations(model: ColmapModel) -> dict[int, np.ndarray]:
    """image id -> indices of the 3D points whose tracks contain that image."""
    pts = model.points
    owner = np.repeat(np.arange(len(pts)), np.diff(pts.track_start))  # (T,) point of each entry
    order = np.argsort(pts.track_images, kind="stable")
    images, starts = np.unique(pts.track_images[order], return_index=True)
    ends = np.append(starts[1:], len(order))
    # A point listed twice for one image (two features on one point) counts once.
    return {int(i): np.unique(owner[order[s:e]]) for i, s, e in zip(images, starts, ends, strict=True)}


def _check_cameras(model: ColmapModel, images: list[ColmapImage]) -> None:
    for camera_id in sorted({im.camera_id for im in images}):
        colmap_intrinsics(model.cameras[camera_id], model.file("cameras"))


def _check_images(images: list[ColmapImage], model: ColmapModel, images_dir: Path) -> dict[int, Path]:
    """Path of every image, after checking that it exists and has its camera's size."""
    paths = {im.id: images_dir / im.name for im in images}
    missing = [im for im in images if not paths[im.id].is_file()]
    if missing:
        others = f" (and {len(missing) - 1} more of {len(images)})" if len(missing) > 1 else ""
        raise MVSInputError(
            f"image {missing[0].name!r} is registered in {model.file('images')} but missing "
            f"from {images_dir}{others}; IMAGES_DIR must hold the undistorted images "
            "(image_undistorter's DENSE/images)",
            paths[missing[0].id],
        )
    for im in images:
        camera = model.cameras[im.camera_id]
        size = image_size(paths[im.id])
        if size != (camera.width, camera.height):
            raise MVSInputError(
                f"image is {size[0]}x{size[1]} but COLMAP camera {camera.id} is "
                f"{camera.width}x{camera.height}; pass the images this model was made from "
                "(for an undistorted model, image_undistorter's DENSE/images), not resized or "
                "original copies (use --max-dim to make the output smaller)",
                paths[im.id],
            )
    return paths


def _common_size(views: list[_View], max_dim: int | None) -> tuple[int, int]:
    """One output size for every view: the largest input size, fitted to ``max_dim``."""
    first = max(views, key=lambda v: v.camera.width * v.camera.height)
    largest = first.camera
    aspect = largest.width / largest.height
    for view in views:
        if abs(view.camera.width / view.camera.height / aspect - 1.0) > ASPECT_TOLERANCE:
            raise MVSInputError(
                f"image is {view.camera.width}x{view.camera.height} but {first.image.name} is "
                f"{largest.width}x{largest.height}: a scene needs one aspect ratio; import "
                "the images of one camera at a time, or crop them to one shape first",
                view.path,
            )
    return fit_size(largest.width, largest.height, max_dim)


def _prepare_out(out: Path, overwrite: bool) -> None:
    ours = {"images": re.compile(r"\d{8}\.jpg"), "cams": re.compile(r"\d{8}_cam\.txt")}
    for sub, pattern in ours.items():
        folder = out / sub
        if folder.is_dir() and any(folder.iterdir()):
            if not overwrite:
                raise MVSInputError(
                    "output folder already holds a scene; choose another --out or pass --overwrite",
                    folder,
                )
            for path in folder.iterdir():
                if pattern.fullmatch(path.name):
                    path.unlink()
            if any(folder.iterdir()):
                raise MVSInputError("holds files this import did not write; not overwriting", folder)
    for sub in ours:
        (out / sub).mkdir(parents=True, exist_ok=True)


def _select_pairs(model: ColmapModel, views: list[_View], config: ColmapImportConfig) -> dict:
    """pair.txt content: triangulation-angle scores over the points the views share."""
    used = np.unique(np.concatenate([v.points for v in views]))
    if len(used) > config.max_pair_points:
        # Scores are sums over shared points; a uniform subset scales them alike.
        used = np.sort(np.random.default_rng(0).choice(used, config.max_pair_points, replace=False))
    visibility = np.zeros((len(views), len(used)), dtype=bool)
    for k, view in enumerate(views):
        visibility[k, np.searchsorted(used, view.points[np.isin(view.points, used)])] = True
    centers = np.array([v.camera.center for v in views])
    return select_views(model.points.xyz[used], visibility, centers, config.num_sources)


def import_colmap(
    sparse_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    config: ColmapImportConfig | None = None,
    progress: bool = False,
) -> dict:
    """Write a COLMAP sparse model and its undistorted images as an MVSNet test-layout scene.

    Args:
        sparse_dir: folder with ``cameras``, ``images``, ``points3D`` (``.bin`` or ``.txt``).
        images_dir: folder the model's image names are relative to.
        out_dir: the scene folder to write (see the module docstring for its content).
        config: options (defaults: ``ColmapImportConfig()``).
        progress: print one line per written view.

    Returns:
        The summary also written to ``out_dir/colmap_import.json``.

    Raises:
        MVSInputError: for distorted camera models, missing or mis-sized images, views with
            too few points, and malformed model files; nothing is written before the checks.
    """
    config = config or ColmapImportConfig()
    config.validate()
    sparse_dir, images_dir, out = Path(sparse_dir), Path(images_dir), Path(out_dir)
    if not images_dir.is_dir():
        raise MVSInputError("images folder not found", images_dir)
    model = read_colmap_model(sparse_dir)
    if not model.images:
        raise MVSInputError("the model has no registered images", model.file("images"))
    images = sorted(model.images.values(), key=lambda im: im.name)
    _check_cameras(model, images)
    paths = _check_images(images, model, images_dir)

    observed = _observations(model)
    views, sparse = [], []
    for im in images:
        colmap_camera = model.cameras[im.camera_id]
        K, E = colmap_intrinsics(colmap_camera), colmap_extrinsics(im)
        seen = observed.get(im.id, np.zeros(0, np.int64))
        depths = model.points.xyz[seen] @ E[2, :3] + E[2, 3]  # camera-frame z of each point
        seen, depths = seen[depths > 0], depths[depths > 0]  # COLMAP keeps none behind; be sure
        if len(seen) < config.min_points:
            sparse.append((im, len(seen)))
            continue
        low, high = view_depth_range(depths, config.depth_percentiles, config.depth_margin)
        camera = Camera(K, E, colmap_camera.width, colmap_camera.height, low, high, config.depth_num,
                        source=f"{model.file('images')} (image {im.id}, {im.name})")
        views.append(_View(im, camera, paths[im.id], seen))

    if sparse:
        listed = ", ".join(f"{im.name} ({n})" for im, n in sparse[:5]) + (" ..." if len(sparse) > 5 else "")
        problem = (f"{len(sparse)} of {len(images)} views observe fewer than {config.min_points} "
                   f"sparse points, too few for a depth range: {listed}")
        if not config.skip_sparse_views:
            raise MVSInputError(problem + "; drop them with --skip-sparse-views or lower --min-points",
                                model.file("points3D"))
        warnings.warn(f"{model.file('points3D')}: {problem}; skipping them", stacklevel=2)
    if len(views) < 2:
        raise MVSInputError(f"only {len(views)} view(s) with enough sparse points; multi-view "
                            "stereo needs at least 2", model.file("points3D"))

    width, height = _common_size(views, config.max_dim)
    pairs = _select_pairs(model, views, config)
    alone = [views[v].image.name for v, sources in pairs.items() if not sources]
    if alone:
        # Such a view still joins the scene (its images and cams are valid) but has no
        # source view, so `mvs reconstruct` makes no depth map for it.
        warnings.warn(f"{', '.join(alone)}: no sparse point shared with any other view; "
                      "no depth map will be made for it", stacklevel=2)
    _prepare_out(out, config.overwrite)

    records = []
    for vid, view in enumerate(views):
        # COLMAP reads pixels as stored and ignores EXIF orientation: so does this copy.
        bgr = cv2.imread(str(view.path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        if bgr is None:
            raise MVSInputError("not a readable image (corrupt or unsupported format)", view.path)
        camera = view.camera
        if (camera.width, camera.height) != (width, height):
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
            camera = camera.resized(width, height)  # scales K, keeping the pixel-centre convention
        write_image(out / "images" / f"{vid:08d}.jpg", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), config.jpeg_quality)
        write_cam(out / "cams" / f"{vid:08d}_cam.txt", camera, depth_num=config.depth_num)
        records.append({"view": vid, "name": view.image.name, "image_id": view.image.id,
                        "camera_id": view.image.camera_id, "points": len(view.points),
                        "depth_range": [camera.depth_min, camera.depth_max],
                        "sources": [s for s, _ in pairs[vid]]})
        if progress:
            print(f"  {vid:08d}  {view.image.name}  {len(view.points)} points, depth "
                  f"[{camera.depth_min:.4g}, {camera.depth_max:.4g}]")
    write_pair(out / "pair.txt", pairs)

    used = np.unique(np.concatenate([v.points for v in views]))
    write_point_cloud(out / "sparse_points.ply", model.points.xyz[used], model.points.rgb[used])
    summary = {
        "source": {"sparse": str(sparse_dir), "format": model.format, "images": str(images_dir)},
        "views": len(views),
        "skipped": [{"name": im.name, "image_id": im.id, "points": n} for im, n in sparse],
        "size": [width, height],
        "sparse_points": int(len(used)),
        "config": asdict(config),
        "per_view": records,
    }
    (out / "colmap_import.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

