"""MVSNet camera files (``XXXXXXXX_cam.txt``).

Layout::

    extrinsic
    r11 r12 r13 t1          <- 4x4 world-to-camera
    ...
    0 0 0 1

    intrinsic
    fx 0 cx                 <- 3x3
    0 fy cy
    0 0 1

    DEPTH_MIN DEPTH_INTERVAL [DEPTH_NUM [DEPTH_MAX]]

The last line (line 11) has published variants. MVSNet/CasMVSNet write
``DEPTH_MIN DEPTH_INTERVAL`` (192 planes implied) or ``DEPTH_MIN DEPTH_INTERVAL
DEPTH_NUM DEPTH_MAX``. PatchmatchNet and IterMVS write ``DEPTH_MIN DEPTH_MAX``; that
reading is chosen explicitly with ``DepthLine.MIN_MAX``, never guessed.
"""

from __future__ import annotations

import enum
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mvs.cameras import DEFAULT_DEPTH_NUM, Camera
from mvs.errors import MVSInputError


class DepthLine(str, enum.Enum):
    """How to read the depth line of a cam file."""

    INTERVAL = "interval"  # DEPTH_MIN DEPTH_INTERVAL [DEPTH_NUM [DEPTH_MAX]]
    MIN_MAX = "min_max"  # DEPTH_MIN DEPTH_MAX (PatchmatchNet / IterMVS)


@dataclass(frozen=True)
class CamFile:
    """The content of one cam file, before it is tied to an image size."""

    intrinsics: np.ndarray  # (3, 3)
    extrinsics: np.ndarray  # (4, 4) world-to-camera
    depth_min: float
    depth_max: float
    depth_num: int | None
    path: str | None = None

    def to_camera(self, width: int, height: int) -> Camera:
        """The camera for an image of ``width`` x ``height`` pixels (K unchanged)."""
        return Camera(
            self.intrinsics,
            self.extrinsics,
            width,
            height,
            self.depth_min,
            self.depth_max,
            self.depth_num,
            source=self.path,
        )


def _parse_numbers(tokens: list[str], path: Path, line: int) -> list[float]:
    values = []
    for token in tokens:
        try:
            value = float(token)
        except ValueError:
            raise MVSInputError(f"expected a number, found {token!r}", path, line) from None
        if not math.isfinite(value):
            raise MVSInputError(f"value {token!r} is not finite", path, line)
        values.append(value)
    return values


def _find_header(lines: list[str], name: str, path: Path) -> int:
    for i, text in enumerate(lines):
        if text.strip().lower() == name:
            return i
    raise MVSInputError(f"no '{name}' header found", path)


def _read_matrix(
    lines: list[str], start: int, rows: int, cols: int, name: str, path: Path
) -> np.ndarray:
    matrix = []
    for r in range(rows):
        index = start + r
        if index >= len(lines):
            raise MVSInputError(
                f"file ends inside the {name} matrix (expected {rows} rows)", path, index + 1
            )
        tokens = lines[index].split()
        if len(tokens) != cols:
            raise MVSInputError(
                f"{name} row {r + 1} has {len(tokens)} values, expected {cols}", path, index + 1
            )
        matrix.append(_parse_numbers(tokens, path, index + 1))
    return np.array(matrix, dtype=np.float64)


def read_cam(path: str | Path, depth_line: DepthLine | str = DepthLine.INTERVAL) -> CamFile:
    """Read an MVSNet cam file.

    Args:
        path: the ``*_cam.txt`` file.
        depth_line: how to read the depth line (see module docstring).

    Raises:
        MVSInputError: naming the file, the line and the problem.
    """
    path = Path(path)
    depth_line = DepthLine(depth_line)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MVSInputError("camera file not found", path) from None
    except UnicodeDecodeError:
        raise MVSInputError("camera file is not text", path) from None
    lines = text.splitlines()

    ext_at = _find_header(lines, "extrinsic", path)
    extrinsics = _read_matrix(lines, ext_at + 1, 4, 4, "extrinsic", path)
    int_at = _find_header(lines, "intrinsic", path)
    intrinsics = _read_matrix(lines, int_at + 1, 3, 3, "intrinsic", path)

    depth_at = next(
        (i for i in range(int_at + 4, len(lines)) if lines[i].strip()),
        None,
    )
    if depth_at is None:
        raise MVSInputError(
            "no depth line after the intrinsic matrix (expected DEPTH_MIN DEPTH_INTERVAL ...)",
            path,
            len(lines) + 1,
        )
    values = _parse_numbers(lines[depth_at].split(), path, depth_at + 1)
    lineno = depth_at + 1

    depth_num: int | None = None
    if depth_line is DepthLine.MIN_MAX:
        if len(values) != 2:
            raise MVSInputError(
                f"depth line has {len(values)} values; DEPTH_MIN DEPTH_MAX expects 2", path, lineno
            )
        depth_min, depth_max = values
    else:
        if len(values) not in (2, 3, 4):
            raise MVSInputError(
                f"depth line has {len(values)} values; expected DEPTH_MIN DEPTH_INTERVAL "
                "[DEPTH_NUM [DEPTH_MAX]]",
                path,
                lineno,
            )
        depth_min, interval = values[0], values[1]
        if interval <= 0:
            raise MVSInputError(
                f"DEPTH_INTERVAL must be > 0, got {interval:g}", path, lineno
            )
        if len(values) >= 3:
            if values[2] != int(values[2]) or values[2] < 2:
                raise MVSInputError(
                    f"DEPTH_NUM must be an integer >= 2, got {values[2]:g}", path, lineno
                )
            depth_num = int(values[2])
        num = depth_num or DEFAULT_DEPTH_NUM
        depth_max = values[3] if len(values) == 4 else depth_min + interval * (num - 1)
        if len(values) == 2 and 0 < depth_min < interval:
            warnings.warn(
                f"{path}, line {lineno}: read as DEPTH_MIN={depth_min:g} "
                f"DEPTH_INTERVAL={interval:g}, giving depths up to {depth_max:g}. If this "
                "file stores DEPTH_MIN DEPTH_MAX (PatchmatchNet/IterMVS style), read it with "
                "depth_line='min_max' (--depth-line min_max).",
                stacklevel=2,
            )
    if depth_min <= 0:
        raise MVSInputError(f"DEPTH_MIN must be > 0, got {depth_min:g}", path, lineno)
    if depth_max <= depth_min:
        raise MVSInputError(
            f"depth range is empty or inverted: DEPTH_MIN={depth_min:g}, DEPTH_MAX={depth_max:g}",
            path,
            lineno,
        )
    # Validate the matrices now, so the error names this file even before an image size is known.
    CamFile(intrinsics, extrinsics, depth_min, depth_max, depth_num, str(path)).to_camera(1, 1)
    return CamFile(intrinsics, extrinsics, depth_min, depth_max, depth_num, str(path))


def write_cam(
    path: str | Path,
    camera: Camera | CamFile,
    depth_num: int | None = None,
    depth_line: DepthLine | str = DepthLine.INTERVAL,
) -> None:
    """Write an MVSNet cam file.

    With ``DepthLine.INTERVAL`` the depth line is ``DEPTH_MIN DEPTH_INTERVAL DEPTH_NUM
    DEPTH_MAX``, which every MVSNet-family reader accepts.
    """
    depth_line = DepthLine(depth_line)
    E, K = camera.extrinsics, camera.intrinsics
    num = depth_num or camera.depth_num or DEFAULT_DEPTH_NUM
    out = ["extrinsic"]
    out += [" ".join(f"{v:.10g}" for v in row) for row in E]
    out += ["", "intrinsic"]
    out += [" ".join(f"{v:.10g}" for v in row) for row in K]
    out.append("")
    if depth_line is DepthLine.MIN_MAX:
        out.append(f"{camera.depth_min:.10g} {camera.depth_max:.10g}")
    else:
        interval = (camera.depth_max - camera.depth_min) / (num - 1)
        out.append(f"{camera.depth_min:.10g} {interval:.10g} {num} {camera.depth_max:.10g}")
    Path(path).write_text("\n".join(out) + "\n")
