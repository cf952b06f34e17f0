"""COLMAP sparse models: ``cameras``, ``images``, ``points3D`` in text or binary form.

A reader and writer of the formats documented at https://colmap.github.io/format.html,
kept raw: values are exactly what the files say (COLMAP's pixel convention, quaternions,
1-based ids). Converting them to this project's :class:`~mvs.cameras.Camera` convention
happens in one place, :mod:`mvs.data.colmap`.

Text (``*.txt``; ``#`` starts a comment line)::

    cameras.txt   CAMERA_ID MODEL WIDTH HEIGHT PARAMS...
    images.txt    IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME
                  X Y POINT3D_ID X Y POINT3D_ID ...      <- second line, may be empty
    points3D.txt  POINT3D_ID X Y Z R G B ERROR IMAGE_ID POINT2D_IDX IMAGE_ID POINT2D_IDX ...

Binary (``*.bin``, little-endian)::

    cameras.bin   uint64 count; per camera: int32 id, int32 model_id, uint64 width,
                  uint64 height, float64 params[n(model)]
    images.bin    uint64 count; per image: int32 id, float64 qw qx qy qz tx ty tz,
                  int32 camera_id, NAME (bytes, NUL-terminated), uint64 n,
                  n x (float64 x, float64 y, int64 point3D_id)
    points3D.bin  uint64 count; per point: uint64 id, float64 x y z, uint8 r g b,
                  float64 error, uint64 n, n x (int32 image_id, int32 point2D_idx)

(QW, QX, QY, QZ, TX, TY, TZ) is the world-to-camera rotation (Hamilton quaternion,
scalar first) and translation. COLMAP 3.12+ also writes ``rigs`` and ``frames`` files;
the three above keep their format and carry every registered image's own pose, so the
rig files are not needed here. A POINT3D_ID of -1 marks a 2D feature without a 3D point.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mvs.errors import MVSInputError

# COLMAP's camera models: id -> (name, number of parameters) (src/colmap/sensor/models.h).
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3),
    1: ("PINHOLE", 4),
    2: ("SIMPLE_RADIAL", 4),
    3: ("RADIAL", 5),
    4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8),
    6: ("FULL_OPENCV", 12),
    7: ("FOV", 5),
    8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5),
    10: ("THIN_PRISM_FISHEYE", 12),
    11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
    12: ("SIMPLE_DIVISION", 4),
    13: ("DIVISION", 5),
    14: ("SIMPLE_FISHEYE", 3),
    15: ("FISHEYE", 4),
    16: ("EUCM", 6),
    17: ("EQUIRECTANGULAR", 2),
}
MODEL_IDS = {name: model_id for model_id, (name, _) in CAMERA_MODELS.items()}
MODEL_PARAMS = dict(CAMERA_MODELS.values())

MODEL_FILES = ("cameras", "images", "points3D")
# One 2D feature of images.bin: float64 x, float64 y, int64 point3D_id (24 bytes, packed).
FEATURE_DTYPE = np.dtype([("xy", "<f8", 2), ("id", "<i8")])


@dataclass(frozen=True)
class ColmapCamera:
    """One line of ``cameras.txt``: a camera model, its image size and its parameters."""

    id: int
    model: str  # e.g. "PINHOLE"
    width: int
    height: int
    params: np.ndarray  # (P,) float64, in COLMAP's order for ``model``


@dataclass(frozen=True)
class ColmapImage:
    """One registered image of ``images.txt``: pose, camera and 2D features.

    ``qvec`` (qw, qx, qy, qz) and ``tvec`` give the world-to-camera transform
    ``x_cam = R(qvec) @ x_world + tvec``.
    """

    id: int
    qvec: np.ndarray  # (4,) float64, scalar first
    tvec: np.ndarray  # (3,) float64
    camera_id: int
    name: str  # path relative to the image folder
    xys: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # (F, 2) COLMAP pixels
    point3d_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (F,), -1: none


@dataclass
class ColmapPoints:
    """All 3D points of ``points3D``, as arrays; point k's track is
    ``track_images[track_start[k]:track_start[k + 1]]`` (and ``track_point2d`` alike)."""

    ids: np.ndarray  # (N,) int64
    xyz: np.ndarray  # (N, 3) float64, world coordinates
    rgb: np.ndarray  # (N, 3) uint8
    error: np.ndarray  # (N,) float64, mean reprojection error in pixels (-1: unknown)
    track_start: np.ndarray  # (N + 1,) int64
    track_images: np.ndarray  # (T,) int64 image ids
    track_point2d: np.ndarray  # (T,) int64 indices into that image's 2D features

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def from_tracks(
        ids: np.ndarray,
        xyz: np.ndarray,
        rgb: np.ndarray,
        error: np.ndarray,
        tracks: list[list[tuple[int, int]]],
    ) -> ColmapPoints:
        """Points from per-point tracks ``[(image_id, point2d_idx), ...]``."""
        lengths = np.array([len(t) for t in tracks], dtype=np.int64)
        start = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.array([pair for t in tracks for pair in t], dtype=np.int64).reshape(-1, 2)
        return ColmapPoints(
            np.asarray(ids, np.int64).reshape(-1),
            np.asarray(xyz, np.float64).reshape(-1, 3),
            np.asarray(rgb, np.uint8).reshape(-1, 3),
            np.asarray(error, np.float64).reshape(-1),
            start,
            flat[:, 0].copy(),
            flat[:, 1].copy(),
        )

    def track(self, k: int) -> list[tuple[int, int]]:
        """Point ``k``'s observations ``[(image_id, point2d_idx), ...]``."""
        s, e = self.track_start[k], self.track_start[k + 1]
        return list(zip(self.track_images[s:e].tolist(), self.track_point2d[s:e].tolist(), strict=True))


@dataclass
class ColmapModel:
    """A COLMAP sparse model: cameras and registered images by id, and the 3D points."""

    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    points: ColmapPoints
    path: Path | None = None  # the folder it was read from
    format: str = ""  # "text" or "binary"

    def file(self, name: str) -> Path | None:
        """The file ``name`` (``cameras``, ``images``, ``points3D``) it was read from."""
        if self.path is None:
            return None
        return self.path / f"{name}.{'bin' if self.format == 'binary' else 'txt'}"


# ----------------------------------------------------------------------------- rotations
def qvec_to_rotation(qvec: np.ndarray) -> np.ndarray:
    """(3, 3) rotation of a Hamilton quaternion (qw, qx, qy, qz), normalised first."""
    q = np.asarray(qvec, dtype=np.float64)
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise ValueError(f"quaternion {q.tolist()} has no direction")
    w, x, y, z = q / norm
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def rotation_to_qvec(rotation: np.ndarray) -> np.ndarray:
    """(4,) unit quaternion (qw, qx, qy, qz), qw >= 0, of a (3, 3) rotation."""
    R = np.asarray(rotation, dtype=np.float64)
    # The eigenvector of the largest eigenvalue of this symmetric matrix is the
    # quaternion (x, y, z, w) (Bar-Itzhack 2000): stable for every rotation angle.
    K = np.array(
        [
            [R[0, 0] - R[1, 1] - R[2, 2], 0, 0, 0],
            [R[1, 0] + R[0, 1], R[1, 1] - R[0, 0] - R[2, 2], 0, 0],
            [R[2, 0] + R[0, 2], R[2, 1] + R[1, 2], R[2, 2] - R[0, 0] - R[1, 1], 0],
            [R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1], R[0, 0] + R[1, 1] + R[2, 2]],
        ]
    ) / 3.0
    values, vectors = np.linalg.eigh(K)
    x, y, z, w = vectors[:, np.argmax(values)]
    q = np.array([w, x, y, z])
    return -q if q[0] < 0 else q


# ----------------------------------------------------------------------------- reading
def find_model_files(folder: Path) -> str:
    """``"binary"`` or ``"text"``: which complete model ``folder`` holds (binary first, as COLMAP)."""
    for kind, suffix in (("binary", "bin"), ("text", "txt")):
        if all((folder / f"{name}.{suffix}").is_file() for name in MODEL_FILES):
            return kind
    present = sorted(p.name for p in folder.glob("*") if p.stem in MODEL_FILES) if folder.is_dir() else []
    if present:
        problem = (
            f"incomplete COLMAP model: found {', '.join(present)}; need cameras, images and "
            "points3D, all .bin or all .txt"
        )
    else:
        problem = "no COLMAP sparse model here (cameras, images, points3D as .bin or .txt)"
        numbered = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []
        if numbered:
            problem += (
                f"; COLMAP's mapper writes one model per numbered sub-folder: did you mean "
                f"{folder / numbered[0]}?"
            )
    raise MVSInputError(problem, folder)


def read_colmap_model(folder: str | Path) -> ColmapModel:
    """Read the COLMAP sparse model in ``folder`` (binary if present, else text).

    Raises:
        MVSInputError: naming the file (and line or byte offset) and the problem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MVSInputError("COLMAP model folder not found", folder)
    if find_model_files(folder) == "binary":
        return read_colmap_binary(folder)
    return read_colmap_text(folder)


def _data_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of every line of ``path``; comment lines become empty."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MVSInputError("file not found", path) from None
    except UnicodeDecodeError:
        raise MVSInputError("not a text file (a .bin model renamed?)", path) from None
    return [(n, "" if line.lstrip().startswith("#") else line.strip())
            for n, line in enumerate(text.splitlines(), 1)]


def _numbers(tokens: list[str], kind: type, path: Path, line: int, what: str) -> list:
    try:
        return [kind(t) for t in tokens]
    except ValueError:
        raise MVSInputError(f"{what}: expected {kind.__name__} values, found {' '.join(tokens)!r}",
                            path, line) from None


def _check_model(name: str, count: int, path: Path, line: int | None, where: str = "") -> None:
    if name not in MODEL_PARAMS:
        raise MVSInputError(f"{where}unknown camera model {name!r}", path, line)
    if count != MODEL_PARAMS[name]:
        raise MVSInputError(
            f"{where}camera model {name} takes {MODEL_PARAMS[name]} parameters, found {count}", path, line
        )


def _read_cameras_text(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for n, text in _data_lines(path):
        if not text:
            continue
        tokens = text.split()
        if len(tokens) < 4:
            raise MVSInputError("expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS...", path, n)
        cam_id, width, height = _numbers([tokens[0], tokens[2], tokens[3]], int, path, n, "id and size")
        params = _numbers(tokens[4:], float, path, n, "camera parameters")
        _check_model(tokens[1], len(params), path, n)
        if cam_id in cameras:
            raise MVSInputError(f"camera {cam_id} is listed twice", path, n)
        cameras[cam_id] = ColmapCamera(cam_id, tokens[1], width, height, np.array(params))
    return cameras


def _read_images_text(path: Path) -> dict[int, ColmapImage]:
    lines = _data_lines(path)
    images = {}
    i = 0
    while i < len(lines):
        n, text = lines[i]
        i += 1
        if not text:
            continue
        # The name is everything after the ninth field (COLMAP names have no spaces, but
        # taking the rest of the line costs nothing and tolerates them).
        tokens = text.split(maxsplit=9)
        if len(tokens) < 10:
            raise MVSInputError("expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME", path, n)
        image_id, camera_id = _numbers([tokens[0], tokens[8]], int, path, n, "image and camera ids")
        pose = np.array(_numbers(tokens[1:8], float, path, n, "pose"))
        # The features line follows directly and may be empty (an image without features).
        features: list[str] = []
        if i < len(lines):
            features = lines[i][1].split()
            i += 1
        if len(features) % 3:
            raise MVSInputError(
                f"features line has {len(features)} values, not a multiple of 3 (X Y POINT3D_ID)",
                path, n + 1,
            )
        values = np.array(_numbers(features, float, path, n + 1, "features")).reshape(-1, 3)
        if image_id in images:
            raise MVSInputError(f"image {image_id} is listed twice", path, n)
        images[image_id] = ColmapImage(
            image_id, pose[:4], pose[4:], camera_id, tokens[9], values[:, :2].copy(),
            values[:, 2].astype(np.int64),
        )
    return images


def _read_points_text(path: Path) -> ColmapPoints:
    ids, xyz, rgb, error, tracks = [], [], [], [], []
    for n, text in _data_lines(path):
        if not text:
            continue
        tokens = text.split()
        if len(tokens) < 8 or (len(tokens) - 8) % 2:
            raise MVSInputError(
                "expected POINT3D_ID X Y Z R G B ERROR followed by (IMAGE_ID POINT2D_IDX) pairs", path, n
            )
        ids.append(_numbers(tokens[:1], int, path, n, "point id")[0])
        xyz.append(_numbers(tokens[1:4], float, path, n, "position"))
        rgb.append(_numbers(tokens[4:7], int, path, n, "colour"))
        error.append(_numbers(tokens[7:8], float, path, n, "error")[0])
        track = _numbers(tokens[8:], int, path, n, "track")
        tracks.append(list(zip(track[0::2], track[1::2], strict=True)))
    if len(set(ids)) != len(ids):
        raise MVSInputError("a POINT3D_ID is listed twice", path)
    return ColmapPoints.from_tracks(np.array(ids), np.array(xyz), np.clip(rgb, 0, 255), np.array(error), tracks)


def read_colmap_text(folder: str | Path) -> ColmapModel:
    """Read ``cameras.txt``, ``images.txt`` and ``points3D.txt`` from ``folder``."""
    folder = Path(folder)
    model = ColmapModel(
        _read_cameras_text(folder / "cameras.txt"),
        _read_images_text(folder / "images.txt"),
        _read_points_text(folder / "points3D.txt"),
        folder,
        "text",
    )
    _check_references(model)
    return model


class _Reader:
    """Sequential little-endian reads from a binary file, errors naming the byte offset."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.data = path.read_bytes()
        except FileNotFoundError:
            raise MVSInputError("file not found", path) from None
        self.offset = 0

    def fail(self, problem: str) -> None:
        raise MVSInputError(f"byte {self.offset}: {problem}", self.path)

    def read(self, fmt: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        if self.offset + size > len(self.data):
            self.fail(f"file ends early (needed {size} more bytes; a truncated or text file?)")
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += size
        return values

    def records(self, dtype: np.dtype | str, count: int) -> np.ndarray:
        """The next ``count`` values of (little-endian) ``dtype``, as a native-order copy."""
        item = np.dtype(dtype)
        size = item.itemsize * count
        if self.offset + size > len(self.data):
            self.fail(f"file ends early (needed {size} more bytes for {count} records)")
        values = np.frombuffer(self.data, item, count, self.offset)
        self.offset += size
        return values.copy()

    def name(self) -> str:
        end = self.data.find(b"\0", self.offset)
        if end < 0:
            self.fail("image name is not NUL-terminated")
        raw = self.data[self.offset:end]
        self.offset = end + 1
        return raw.decode("utf-8", errors="replace")

    def finish(self) -> None:
        if self.offset != len(self.data):
            self.fail(f"{len(self.data) - self.offset} bytes left after the last record")


def _read_cameras_binary(path: Path) -> dict[int, ColmapCamera]:
    f = _Reader(path)
    cameras = {}
    for _ in range(f.read("Q")[0]):
        cam_id, model_id, width, height = f.read("iiQQ")
        if model_id not in CAMERA_MODELS:
            f.fail(f"camera {cam_id} has unknown camera model id {model_id}")
        name, count = CAMERA_MODELS[model_id]
        cameras[cam_id] = ColmapCamera(cam_id, name, width, height, f.records("<f8", count).astype(np.float64))
    f.finish()
    return cameras


def _read_images_binary(path: Path) -> dict[int, ColmapImage]:
    f = _Reader(path)
    images = {}
    for _ in range(f.read("Q")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = f.read("i7di")
        name = f.name()
        count = f.read("Q")[0]
        records = f.records(FEATURE_DTYPE, count)
        images[image_id] = ColmapImage(
            image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), camera_id, name,
            records["xy"].astype(np.float64), records["id"].astype(np.int64),
        )
    f.finish()
    return images


def _read_points_binary(path: Path) -> ColmapPoints:
    f = _Reader(path)
    count = f.read("Q")[0]
    ids = np.zeros(count, np.int64)
    xyz = np.zeros((count, 3))
    rgb = np.zeros((count, 3), np.uint8)
    error = np.zeros(count)
    starts = np.zeros(count + 1, np.int64)
    tracks = []
    for k in range(count):
        pid, x, y, z, r, g, b, err, length = f.read("Q3d3BdQ")
        ids[k], xyz[k], rgb[k], error[k] = pid, (x, y, z), (r, g, b), err
        tracks.append(f.records("<i4", 2 * length).reshape(-1, 2))
        starts[k + 1] = starts[k] + length
    f.finish()
    flat = np.concatenate(tracks).astype(np.int64) if tracks else np.zeros((0, 2), np.int64)
    return ColmapPoints(ids, xyz, rgb, error, starts, flat[:, 0].copy(), flat[:, 1].copy())


def read_colmap_binary(folder: str | Path) -> ColmapModel:
    """Read ``cameras.bin``, ``images.bin`` and ``points3D.bin`` from ``folder``."""
    folder = Path(folder)
    model = ColmapModel(
        _read_cameras_binary(folder / "cameras.bin"),
        _read_images_binary(folder / "images.bin"),
        _read_points_binary(folder / "points3D.bin"),
        folder,
        "binary",
    )
    _check_references(model)
    return model


def _check_references(model: ColmapModel) -> None:
    """Every image names an existing camera; every point a finite position."""
    for image in model.images.values():
        if image.camera_id not in model.cameras:
            raise MVSInputError(
                f"image {image.id} ({image.name}) uses camera {image.camera_id}, which is not in "
                f"{model.file('cameras').name}", model.file("images"),
            )
        if not (np.all(np.isfinite(image.qvec)) and np.all(np.isfinite(image.tvec))):
            raise MVSInputError(f"image {image.id} ({image.name}) has a non-finite pose", model.file("images"))
        if np.linalg.norm(image.qvec) < 1e-12:
            raise MVSInputError(f"image {image.id} ({image.name}) has a zero quaternion", model.file("images"))
    if not np.all(np.isfinite(model.points.xyz)):
        raise MVSInputError("a 3D point has a non-finite position", model.file("points3D"))


# ----------------------------------------------------------------------------- writing
def write_colmap_text(folder: str | Path, model: ColmapModel) -> None:
    """Write ``model`` as ``cameras.txt``, ``images.txt`` and ``points3D.txt`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = ["# Camera list with one line of data per camera:",
           "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
           f"# Number of cameras: {len(model.cameras)}"]
    for c in model.cameras.values():
        _check_model(c.model, len(c.params), folder / "cameras.txt", None, f"camera {c.id}: ")
        out.append(" ".join([str(c.id), c.model, str(c.width), str(c.height)] + [repr(float(v)) for v in c.params]))
    (folder / "cameras.txt").write_text("\n".join(out) + "\n")

    out = ["# Image list with two lines of data per image:",
           "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
           "#   POINTS2D[] as (X, Y, POINT3D_ID)",
           f"# Number of images: {len(model.images)}"]
    for im in model.images.values():
        pose = [repr(float(v)) for v in (*im.qvec, *im.tvec)]
        out.append(" ".join([str(im.id), *pose, str(im.camera_id), im.name]))
        out.append(" ".join(f"{float(x)!r} {float(y)!r} {int(p)}"
                            for (x, y), p in zip(im.xys, im.point3d_ids, strict=True)))
    (folder / "images.txt").write_text("\n".join(out) + "\n")

    pts = model.points
    out = ["# 3D point list with one line of data per point:",
           "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)",
           f"# Number of points: {len(pts)}"]
    for k in range(len(pts)):
        s, e = pts.track_start[k], pts.track_start[k + 1]
        track = np.stack([pts.track_images[s:e], pts.track_point2d[s:e]], 1).reshape(-1)
        out.append(" ".join([str(int(pts.ids[k]))] + [repr(float(v)) for v in pts.xyz[k]]
                            + [str(int(v)) for v in pts.rgb[k]] + [repr(float(pts.error[k]))]
                            + [str(int(v)) for v in track]))
    (folder / "points3D.txt").write_text("\n".join(out) + "\n")


def write_colmap_binary(folder: str | Path, model: ColmapModel) -> None:
    """Write ``model`` as ``cameras.bin``, ``images.bin`` and ``points3D.bin`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    parts = [struct.pack("<Q", len(model.cameras))]
    for c in model.cameras.values():
        _check_model(c.model, len(c.params), folder / "cameras.bin", None, f"camera {c.id}: ")
        parts.append(struct.pack("<iiQQ", c.id, MODEL_IDS[c.model], c.width, c.height))
        parts.append(np.asarray(c.params, "<f8").tobytes())
    (folder / "cameras.bin").write_bytes(b"".join(parts))

    parts = [struct.pack("<Q", len(model.images))]
    for im in model.images.values():
        parts.append(struct.pack("<i7di", im.id, *map(float, im.qvec), *map(float, im.tvec), im.camera_id))
        parts.append(im.name.encode("utf-8") + b"\0")
        records = np.zeros(len(im.point3d_ids), FEATURE_DTYPE)
        records["xy"], records["id"] = im.xys, im.point3d_ids
        parts.append(struct.pack("<Q", len(records)) + records.tobytes())
    (folder / "images.bin").write_bytes(b"".join(parts))

    pts = model.points
    parts = [struct.pack("<Q", len(pts))]
    for k in range(len(pts)):
        s, e = pts.track_start[k], pts.track_start[k + 1]
        parts.append(struct.pack("<Q3d3BdQ", int(pts.ids[k]), *map(float, pts.xyz[k]),
                                 *map(int, pts.rgb[k]), float(pts.error[k]), int(e - s)))
        parts.append(np.stack([pts.track_images[s:e], pts.track_point2d[s:e]], 1).astype("<i4").tobytes())
    (folder / "points3D.bin").write_bytes(b"".join(parts))
