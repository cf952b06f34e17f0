"""The ``mvs`` command. Each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mvs.errors import MVSInputError

# Seeds at or above this are never used for training data: held-out scenes for demos and
# benchmarks come from here.
HELD_OUT_SEED = 1_000_000


def _add_synth(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate synthetic DTU-style scenes with exact ground truth",
        description="Write synthetic scenes (millimetres, DTU-like cameras) with GT depth, masks and points.",
    )
    p.add_argument("out", type=Path, help="output folder")
    p.add_argument("--scenes", type=int, default=1, help="number of scenes (default 1)")
    p.add_argument("--views", type=int, default=49, help="views per scene (default 49, as DTU)")
    p.add_argument("--width", type=int, default=640, help="image width (default 640)")
    p.add_argument("--height", type=int, default=512, help="image height (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same scenes")
    p.add_argument("--layout", choices=["test", "train"], default="test",
                   help="test: MVSNet test layout per scene; train: DTU training layout")
    p.add_argument("--lights", type=int, default=7, help="lighting conditions per view (default 7)")
    p.add_argument("--gt-spacing", type=float, default=0.2, help="spacing of gt_points.ply in mm")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    from mvs.data.synthetic import SynthConfig, generate_dataset

    config = SynthConfig(
        views=args.views, width=args.width, height=args.height, lights=args.lights,
        gt_spacing=args.gt_spacing,
    )
    start = time.perf_counter()
    paths = generate_dataset(args.out, args.scenes, config, args.seed, layout=args.layout, progress=True)
    print(f"wrote {len(paths)} scene(s) in {time.perf_counter() - start:.1f} s:")
    for path in paths:
        print(f"  {path}")
    return 0


def _add_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="check a scene folder and summarise it",
                       description="Load a scene (MVSNet test layout or BlendedMVS), validate it and print a summary.")
    p.add_argument("scene", type=Path)
    p.add_argument("--depth-line", choices=["interval", "min_max"], default="interval",
                   help="how to read line 11 of cam files (min_max: PatchmatchNet/IterMVS style)")
    p.set_defaults(func=cmd_info)


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    from mvs.data.scene import load_scene

    scene = load_scene(args.scene, args.depth_line)
    width, height = scene.image_size
    mins = [v.camera.depth_min for v in scene.views.values()]
    maxs = [v.camera.depth_max for v in scene.views.values()]
    centers = np.array([v.camera.center for v in scene.views.values()])
    print(f"scene {scene.name}: {len(scene.views)} views, {width}x{height}")
    print(f"  depth range: min {min(mins):.4g} .. max {max(maxs):.4g} (scene units)")
    print(f"  camera centres span {np.ptp(centers, axis=0).round(3).tolist()}")
    print(f"  pair.txt: {len(scene.pairs)} reference views, "
          f"{np.mean([len(s) for s in scene.pairs.values()]):.1f} sources each on average")
    print(f"  ground truth depth: {'yes' if scene.has_ground_truth() else 'no'}")
    return 0


def _add_fuse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fuse", help="fuse depth maps into a coloured point cloud",
                       description="Fuse RECON_DIR/depths/*.pfm (and confidence/*.pfm if present) of SCENE into a PLY.")
    p.add_argument("recon_dir", type=Path, help="folder with depths/ (and optionally confidence/)")
    p.add_argument("scene", type=Path, help="the scene (cameras, images, pair.txt)")
    p.add_argument("--out", type=Path, required=True, help="output PLY")
    _add_fusion_options(p)
    p.set_defaults(func=cmd_fuse)


def _add_fusion_options(p: argparse.ArgumentParser) -> None:
    from mvs.fusion import FusionConfig

    d = FusionConfig()
    p.add_argument("--confidence-threshold", type=float, default=d.confidence_threshold)
    p.add_argument("--reprojection-error", type=float, default=d.reprojection_error, help="pixels")
    p.add_argument("--relative-depth-error", type=float, default=d.relative_depth_error)
    p.add_argument("--min-consistent-views", type=int, default=d.min_consistent_views)
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _fusion_config(args: argparse.Namespace):
    from mvs.fusion import FusionConfig

    return FusionConfig(
        confidence_threshold=args.confidence_threshold,
        reprojection_error=args.reprojection_error,
        relative_depth_error=args.relative_depth_error,
        min_consistent_views=args.min_consistent_views,
    )


def fuse_folder(recon_dir: Path, scene_dir: Path, out: Path, config, device: str = "cpu") -> dict:
    """Fuse a folder of PFM depth maps; writes ``out`` (PLY) and ``out`` with .json stats."""
    from mvs.data.scene import load_scene
    from mvs.fusion import fuse_depth_maps
    from mvs.io import read_pfm, write_point_cloud

    scene = load_scene(scene_dir)
    depths, confidences = {}, {}
    for view in scene.view_ids:
        path = recon_dir / "depths" / f"{view:08d}.pfm"
        if path.is_file():
            depths[view] = read_pfm(path)
            conf = recon_dir / "confidence" / f"{view:08d}.pfm"
            if conf.is_file():
                confidences[view] = read_pfm(conf)
    if not depths:
        raise MVSInputError("no depth maps found (expected depths/00000000.pfm ...)", recon_dir)
    cloud = fuse_depth_maps(scene, depths, confidences or None, config, device=device, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_point_cloud(out, cloud.points, cloud.colors)
    stats = cloud.stats_dict()
    out.with_suffix(".json").write_text(json.dumps(stats, indent=2))
    return stats


def cmd_fuse(args: argparse.Namespace) -> int:
    stats = fuse_folder(args.recon_dir, args.scene, args.out, _fusion_config(args), args.device)
    print(f"fused {stats['points']} points -> {args.out} (per-view counts in {args.out.with_suffix('.json')})")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded default data",
                       description="Generate a held-out synthetic scene and reconstruct it into a point cloud.")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--views", type=int, default=49)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from mvs.data.scene import load_scene
    from mvs.data.synthetic import SynthConfig, generate_scene
    from mvs.fusion import FusionConfig
    from mvs.io import read_point_cloud, write_image
    from mvs.visualize import render_point_cloud, save_depth_preview

    out = args.out
    scene_dir = out / "scene"
    print(f"[1/3] generating a held-out synthetic scene (seed {args.seed}) in {scene_dir}")
    start = time.perf_counter()
    config = SynthConfig(views=args.views, width=args.width, height=args.height)
    generate_scene(scene_dir, config, args.seed, progress=True)
    scene = load_scene(scene_dir)
    print(f"      {len(scene.views)} views at {args.width}x{args.height} in {time.perf_counter() - start:.1f} s")

    print("[2/3] fusing the ground-truth depth maps (the network replaces them once it ships)")
    cloud_path = out / "fused.ply"
    stats = fuse_folder(scene_dir, scene_dir, cloud_path, FusionConfig())

    print("[3/3] rendering previews")
    points, colors = read_point_cloud(cloud_path)
    reference = scene.views[scene.view_ids[0]]
    render = render_point_cloud(points, colors, reference.camera, point_size=2)
    render_path = out / "fused_render.png"
    write_image(render_path, render)
    preview_path = out / "depth_preview.png"
    save_depth_preview(str(preview_path), scene.depth(reference.id), image=scene.image(reference.id),
                       title=f"view {reference.id}", unit="mm")
    print()
    print(f"point cloud : {cloud_path} ({stats['points']:,} points)")
    print(f"render      : {render_path}")
    print(f"depth view  : {preview_path}")
    print(f"scene       : {scene_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvs", description="Learned multi-view stereo: calibrated photographs in, depth maps and a fused point cloud out."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_synth(sub)
    _add_info(sub)
    _add_fuse(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MVSInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
