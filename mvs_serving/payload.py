"""The validated scene as bytes: what the ingress sends to a model replica.

A path would not do: the replica may run on another node. The files are sent as they were
uploaded (encoded images are far smaller than decoded arrays) under normalised names, and
the replica writes them into its own temporary directory and loads them with the core
loader, which re-checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mvs.data.scene import Scene, load_mvsnet_scene

# Names a payload may hold: nothing else is ever written on the replica.
_ALLOWED = re.compile(r"(images/\d{8,}\.(jpg|jpeg|png|bmp|tif|tiff)|cams/\d{8,}_cam\.txt|pair\.txt)")


@dataclass(frozen=True)
class ScenePayload:
    """A scene in the MVSNet test layout, file by file.

    Attributes:
        name: display name of the scene.
        files: relative path (``images/00000000.jpg``, ``cams/00000000_cam.txt``,
            ``pair.txt``) -> file content.
        views: number of views.
        image_size: (width, height) shared by the views.
    """

    name: str
    files: dict[str, bytes]
    views: int
    image_size: tuple[int, int]

    def __post_init__(self) -> None:
        for name in self.files:
            if not _ALLOWED.fullmatch(name):
                raise ValueError(f"payload file name {name!r} is not part of the MVSNet test layout")

    @property
    def nbytes(self) -> int:
        return sum(len(data) for data in self.files.values())

    @classmethod
    def from_scene(cls, scene: Scene, pair_text: str) -> ScenePayload:
        """Pack a loaded scene: its images and cam files as stored, and ``pair_text``."""
        files: dict[str, bytes] = {}
        for view_id in scene.view_ids:
            view = scene.views[view_id]
            suffix = view.image_path.suffix.lower()
            files[f"images/{view_id:08d}{suffix}"] = view.image_path.read_bytes()
            cam_path = Path(view.camera.source) if view.camera.source else None
            if cam_path is None:
                raise ValueError(f"view {view_id} has no camera file to send")
            files[f"cams/{view_id:08d}_cam.txt"] = cam_path.read_bytes()
        files["pair.txt"] = pair_text.encode()
        return cls(scene.name, files, len(scene.views), scene.image_size)

    def write(self, root: Path) -> Path:
        """Write the files under ``root`` (created); returns ``root``."""
        root = Path(root)
        for sub in ("images", "cams"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        for name, data in self.files.items():
            (root / name).write_bytes(data)
        return root

    def load(self, root: Path, depth_line: str = "interval") -> Scene:
        """Write under ``root`` and load with the core loader (which validates again)."""
        scene = load_mvsnet_scene(self.write(root), depth_line)
        scene.name = self.name
        return scene
