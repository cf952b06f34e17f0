"""How the checkpoint behaves on real photographs (../shared/data, skipped when absent).

For DTU scan 24 (mm, with object masks) and the Middlebury temple sparse ring (metres):
reconstructs every view, fuses, and reports

* cross-view depth consistency: the fraction of depth pixels that reproject consistently
  (< 1 px, < 1 % depth) into at least 2 neighbouring views' depth maps;
* silhouette consistency (DTU, which has masks): of the fused points coming from pixels
  inside their reference view's mask, the fraction that project inside the mask of every
  other view in whose frame they fall;

and writes benchmarks/results/real_<dtu|middlebury>_depth.png (depth | confidence of four
views) and real_<...>_cloud.png (the fused cloud rendered from the first camera).

    .venv/bin/python benchmarks/real_data.py [--max-dim 800] [--scenes dtu_scan24]
        [--num-views N] [--coarse-max-dim N] [--early-views N]   (defaults: mvs reconstruct's)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.evaluation import cross_view_depth_consistency, silhouette_consistency  # noqa: E402
from mvs.fusion import FusionConfig, fuse_depth_maps  # noqa: E402
from mvs.inference import ReconstructConfig, reconstruct_scene  # noqa: E402
from mvs.io import read_pfm, write_image, write_point_cloud  # noqa: E402
from mvs.visualize import colorize, render_point_cloud  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# Result files are named by these short names; the pictures hold only this project's
# outputs (depth, confidence, the fused cloud), never the photographs themselves.
SHORT_NAMES = {"dtu_scan24": "dtu", "middlebury_templeSparseRing": "middlebury"}


def depth_confidence_panel(depth: np.ndarray, confidence: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    """[colour-mapped depth | confidence] side by side, (H, 2W, 3) uint8."""
    return np.concatenate([colorize(depth, depth > 0, *depth_range), colorize(confidence, None, 0.0, 1.0, cmap="viridis")], axis=1)


def montage(images: list[np.ndarray], columns: int = 2) -> np.ndarray:
    height = min(im.shape[0] for im in images)
    width = min(im.shape[1] for im in images)
    images = [im[:height, :width] for im in images]
    while len(images) % columns:
        images.append(np.full_like(images[0], 255))
    rows = [np.concatenate(images[i : i + columns], axis=1) for i in range(0, len(images), columns)]
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--scenes", nargs="+", default=["dtu_scan24", "middlebury_templeSparseRing"])
    parser.add_argument("--max-dim", type=int, default=800)
    parser.add_argument("--num-views", type=int, default=ReconstructConfig().num_views)
    parser.add_argument("--coarse-max-dim", type=int, default=ReconstructConfig().coarse_max_dim, help="0: one scale")
    parser.add_argument("--early-views", type=int, default=ReconstructConfig().early_views)
    parser.add_argument("--coarse-views", type=int, default=ReconstructConfig().coarse_views)
    parser.add_argument("--name-suffix", default="", help="appended to the result files' names")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model, _ = load_model(args.checkpoint, args.device)
    for name in args.scenes:
        root = SHARED / name
        if not root.is_dir():
            print(f"skipping {name}: {root} not present")
            continue
        scene = load_scene(root)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            start = time.perf_counter()
            summary = reconstruct_scene(scene, model, out, ReconstructConfig(
                max_dim=args.max_dim, num_views=args.num_views, coarse_max_dim=args.coarse_max_dim or None,
                early_views=args.early_views, coarse_views=args.coarse_views, device=args.device, fuse=False,
                previews=False))
            depths = {v: read_pfm(out / "depths" / f"{v:08d}.pfm") for v in scene.view_ids
                      if (out / "depths" / f"{v:08d}.pfm").is_file()}
            confidences = {v: read_pfm(out / "confidence" / f"{v:08d}.pfm") for v in depths}
            cross = cross_view_depth_consistency(depths, scene)
            cloud = fuse_depth_maps(scene, depths, confidences, FusionConfig())
            result = {
                "scene": name,
                "max_dim": args.max_dim,
                "processed_size": summary["processed_size"],
                "coarse_size": summary["coarse_size"],
                "num_views": args.num_views,
                "early_views": args.early_views,
                "coarse_views": args.coarse_views,
                "seconds_per_view": summary["seconds_per_view"],
                "total_seconds": time.perf_counter() - start,
                "cross_view_consistency": cross.to_dict(),
                "fused_points": int(len(cloud.points)),
            }
            if all(v.mask_path is not None for v in scene.views.values()):
                result["silhouette_consistency"] = silhouette_consistency(cloud.points, cloud.source_view, scene).to_dict()
            picks = scene.view_ids[:: max(1, len(scene.view_ids) // 4)][:4]
            short = SHORT_NAMES.get(name, name) + args.name_suffix
            RESULTS.mkdir(parents=True, exist_ok=True)
            panels = [depth_confidence_panel(depths[v], confidences[v], (scene.views[v].camera.depth_min, scene.views[v].camera.depth_max)) for v in picks]
            write_image(RESULTS / f"real_{short}_depth.png", montage(panels))
            camera = scene.views[scene.view_ids[0]].camera.resized(*summary["processed_size"])
            write_image(RESULTS / f"real_{short}_cloud.png", render_point_cloud(cloud.points, cloud.colors, camera, 2))
            write_point_cloud(out / "fused.ply", cloud.points, cloud.colors)
        print({k: v for k, v in result.items() if k != "silhouette_consistency"})
        write_result(f"real_{SHORT_NAMES.get(name, name)}{args.name_suffix}", result)


if __name__ == "__main__":
    main()
