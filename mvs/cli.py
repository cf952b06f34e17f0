"""The ``mvs`` command. Each subcommand parses its arguments and calls the library."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from mvs.errors import MVSInputError


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
    from mvs.fusion import CONSISTENCY_MODES, FusionConfig

    d = FusionConfig()
    p.add_argument("--confidence-threshold", type=float, default=d.confidence_threshold)
    p.add_argument("--reprojection-error", type=float, default=d.reprojection_error, help="pixels (fixed mode)")
    p.add_argument("--relative-depth-error", type=float, default=d.relative_depth_error,
                   help="|d' - d| / d (fixed mode)")
    p.add_argument("--min-consistent-views", type=int, default=d.min_consistent_views,
                   help="fixed mode: agreeing sources needed; dynamic mode: the lowest level")
    p.add_argument("--consistency", choices=CONSISTENCY_MODES, default=d.consistency,
                   help="fixed: one pair of thresholds; dynamic (D2HC-RMVSNet): kept when for some n at least n "
                   "sources agree within n times the per-view steps below")
    p.add_argument("--dynamic-reprojection-error", type=float, default=d.dynamic_reprojection_error,
                   help=f"dynamic mode: pixels allowed per agreeing view (default {d.dynamic_reprojection_error:g})")
    p.add_argument("--dynamic-relative-depth-error", type=float, default=d.dynamic_relative_depth_error,
                   help=f"dynamic mode: relative depth error per agreeing view (default {d.dynamic_relative_depth_error:.3g})")
    p.add_argument("--normals", action="store_true", help="unit normals per point (towards its camera) in the PLY")
    p.add_argument("--ply-source-view", action="store_true",
                   help="write each point's reference view id into the PLY (int vertex property source_view)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")


def _fusion_config(args: argparse.Namespace):
    from mvs.fusion import FusionConfig

    try:
        return FusionConfig(
            confidence_threshold=args.confidence_threshold,
            reprojection_error=args.reprojection_error,
            relative_depth_error=args.relative_depth_error,
            min_consistent_views=args.min_consistent_views,
            consistency=args.consistency,
            dynamic_reprojection_error=args.dynamic_reprojection_error,
            dynamic_relative_depth_error=args.dynamic_relative_depth_error,
            normals=args.normals,
            ply_source_view=args.ply_source_view,
        )
    except ValueError as error:  # a bad option value: report it like bad input
        raise MVSInputError(str(error)) from None


def fuse_folder(recon_dir: Path, scene_dir: Path, out: Path, config, device: str = "cpu") -> dict:
    """Fuse a folder of PFM depth maps; writes ``out`` (PLY) and ``out`` with .json stats."""
    from mvs.data.scene import load_scene
    from mvs.fusion import fuse_depth_maps
    from mvs.inference import read_depth_maps

    scene = load_scene(scene_dir)
    depths, confidences = read_depth_maps(recon_dir, scene)
    cloud = fuse_depth_maps(scene, depths, confidences or None, config, device=device, progress=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    cloud.write_ply(out, source_view=config.ply_source_view)
    stats = cloud.stats_dict()
    out.with_suffix(".json").write_text(json.dumps(stats, indent=2))
    return stats


def cmd_fuse(args: argparse.Namespace) -> int:
    stats = fuse_folder(args.recon_dir, args.scene, args.out, _fusion_config(args), args.device)
    print(f"fused {stats['points']} points -> {args.out} (per-view counts in {args.out.with_suffix('.json')})")
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    from mvs.demo import DemoConfig

    d = DemoConfig()
    p = sub.add_parser("demo", help="run the main job on the embedded default data",
                       description="Generate a held-out synthetic scene, reconstruct it with the shipped "
                       "checkpoint, fuse the depth maps and score the cloud against the exact ground truth.")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"))
    p.add_argument("--views", type=int, default=d.views)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--height", type=int, default=d.height)
    p.add_argument("--seed", type=int, default=d.seed, help="scene seed (held-out: never used in training)")
    p.add_argument("--num-views", type=int, default=d.num_views,
                   help=f"reference + sources per depth map (default {d.num_views}; more is slower and more accurate)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the checkpoint shipped with mvs")
    p.add_argument("--device", default=d.device, help="cpu, cuda, or auto")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from mvs.demo import DemoConfig, run_demo

    config = DemoConfig(views=args.views, width=args.width, height=args.height, seed=args.seed,
                        num_views=args.num_views, checkpoint=args.checkpoint, device=args.device)
    report = run_demo(config, args.out)
    cloud, files = report["point_cloud"], report["files"]
    print()
    print(f"accuracy {cloud['accuracy']:.3f} mm   completeness {cloud['completeness']:.3f} mm   "
          f"overall {cloud['overall']:.3f} mm")
    print(f"point cloud : {files['point_cloud']}")
    print(f"picture     : {files['picture']}")
    print(f"depth maps  : {files['previews']} (image | depth | confidence per view)")
    print(f"scores      : {files['scores']}")
    print(f"took {report['seconds']:.0f} s")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train the network in this process (the Ray job wraps the same code)",
        description="Train on a DTU training layout, scene folders, or synthetic scans generated on the spot. "
        "Options come from --config YAML and key=value overrides, e.g. optim.lr=5e-4 data.train=data/dtu.",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.epochs=4 model.hypotheses=[32,16,8]")
    p.add_argument("--config", type=Path, help="YAML file (a run's config.yaml works)")
    p.add_argument("--out", help="run folder (re-using one resumes it)")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from mvs.config import load_config
    from mvs.training import TrainConfig, train

    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    config = load_config(TrainConfig, args.config, overrides)
    result = train(config, progress=True)
    print(f"run folder: {config.out} (best.pt, last.pt, config.yaml, metrics.jsonl)")
    print(f"best validation score: {result['best_metric']:.4f}")
    return 0


def _add_reconstruct(sub: argparse._SubParsersAction) -> None:
    from mvs.inference import ReconstructConfig

    d = ReconstructConfig()
    p = sub.add_parser(
        "reconstruct", help="depth maps, confidence and a fused point cloud for a scene",
        description="Run the network over every view of SCENE (MVSNet test layout), then fuse.",
    )
    p.add_argument("scene", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the checkpoint shipped with mvs")
    p.add_argument("--max-dim", type=int, default=d.max_dim, help=f"longer image side processed (default {d.max_dim})")
    p.add_argument("--coarse-max-dim", type=int, default=d.coarse_max_dim,
                   help=f"above this longer side, run the network at it first and let that depth guide the last "
                   f"stage at --max-dim (default {d.coarse_max_dim}; 0: one scale)")
    p.add_argument("--num-views", type=int, default=d.num_views, help=f"reference + sources (default {d.num_views})")
    p.add_argument("--early-views", type=int, default=d.early_views,
                   help=f"with the first pass: views of the stages before the last at --max-dim (default "
                   f"{d.early_views or '--num-views'}; 0: skip them, faster but loses parts too thin for the first pass)")
    p.add_argument("--coarse-views", type=int, default=d.coarse_views,
                   help=f"views of the first pass (default {d.coarse_views}: the reference and all ten pair.txt sources)")
    p.add_argument("--min-source-score", type=float, default=d.min_source_score,
                   help=f"leave out sources whose pair.txt score is below this fraction of the best source's "
                   f"(default {d.min_source_score}; 0: use every listed source)")
    p.add_argument("--depth-line", choices=["interval", "min_max"], default="interval")
    p.add_argument("--no-fuse", action="store_true", help="stop after the depth maps")
    p.add_argument("--no-previews", action="store_true", help="skip the preview PNGs")
    p.add_argument("--fp32", action="store_true", help="on CUDA, run in float32 instead of float16 mixed precision")
    _add_fusion_options(p)
    p.set_defaults(func=cmd_reconstruct)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    from mvs.checkpoint import load_model
    from mvs.data.scene import load_scene
    from mvs.inference import ReconstructConfig, reconstruct_scene

    if args.num_views < 2:
        raise MVSInputError(f"--num-views must be at least 2 (a reference and a source), got {args.num_views}")
    if args.coarse_max_dim is not None and args.coarse_max_dim < 0:
        raise MVSInputError(f"--coarse-max-dim must be 0 (off) or a size in pixels, got {args.coarse_max_dim}")
    if args.early_views is not None and args.early_views < 2 and args.early_views != 0:
        raise MVSInputError(f"--early-views must be 0 or at least 2, got {args.early_views}")
    if args.coarse_views is not None and args.coarse_views < 2:
        raise MVSInputError(f"--coarse-views must be at least 2, got {args.coarse_views}")
    if not 0.0 <= args.min_source_score <= 1.0:
        raise MVSInputError(f"--min-source-score must be in [0, 1], got {args.min_source_score}")
    scene = load_scene(args.scene, args.depth_line)
    model, _ = load_model(args.checkpoint, args.device)
    config = ReconstructConfig(
        max_dim=args.max_dim, coarse_max_dim=args.coarse_max_dim or None, early_views=args.early_views,
        num_views=args.num_views, coarse_views=args.coarse_views, min_source_score=args.min_source_score,
        mixed_precision=not args.fp32,
        device=args.device, previews=not args.no_previews, fuse=not args.no_fuse, fusion=_fusion_config(args),
    )
    summary = reconstruct_scene(scene, model, args.out, config)
    print(f"depth maps  : {args.out / 'depths'} ({summary['views']} views at "
          f"{summary['processed_size'][0]}x{summary['processed_size'][1]}"
          + (f" from {summary['coarse_size'][0]}x{summary['coarse_size'][1]}" if summary["coarse_size"] else "")
          + f", {summary['seconds_per_view']:.2f} s/view)")
    if config.previews:
        print(f"previews    : {args.out / 'preview'}")
    if config.fuse:
        print(f"point cloud : {args.out / 'fused.ply'} ({summary['fused_points']:,} points)")
    print(f"peak memory : {summary['peak_rss_gb']:.2f} GB")
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a reconstruction against ground truth",
        description="Score RECON (an `mvs reconstruct` folder, or a PLY) against ground truth: depth maps "
        "against the scene's GT depths, and the fused cloud DTU-style against the synthetic scene's "
        "gt_points.ply or the official DTU files (--dtu-root/--scan). Distances are in scene units.",
    )
    p.add_argument("recon", type=Path, help="reconstruction folder (depths/, fused.ply) or a PLY file")
    p.add_argument("--scene", type=Path, required=True, help="the scene that was reconstructed")
    p.add_argument("--out", type=Path, help="where scores, error PLYs and the PNG go (default RECON/evaluation)")
    p.add_argument("--dtu-root", type=Path, help="official DTU evaluation data (Points/, ObsMask/)")
    p.add_argument("--scan", type=int, help="DTU scan number, with --dtu-root")
    p.add_argument("--spacing", type=float, default=0.2, help="thinning spacing (DTU: 0.2 mm)")
    p.add_argument("--max-dist", type=float, default=20.0, help="outlier distance (DTU: 20 mm)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 1.0, 2.0], help="F-score thresholds")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mvs.data.scene import load_scene
    from mvs.evaluation import EvalConfig, GroundTruth, evaluate_depth_folder, evaluate_point_cloud

    scene = load_scene(args.scene)
    recon = args.recon
    out = args.out or ((recon if recon.is_dir() else recon.parent) / "evaluation")
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {}
    if recon.is_dir() and (recon / "depths").is_dir() and scene.has_ground_truth():
        depth = evaluate_depth_folder(recon, scene)
        report["depth"] = depth.to_dict()["total"]
        within = ", ".join(f"{100 * v:.1f}% < {t}" for t, v in report["depth"]["within"].items() if v is not None)
        print(f"depth maps: MAE {report['depth']['mae']:.4g} (scene units); {within}")
    cloud = recon / "fused.ply" if recon.is_dir() else recon
    if args.dtu_root is not None:
        if args.scan is None:
            raise MVSInputError("--dtu-root needs --scan")
        gt = GroundTruth.from_dtu(args.dtu_root, args.scan)
    elif (args.scene / "gt_points.ply").is_file():
        gt = GroundTruth.from_synthetic_scene(args.scene)
    else:
        gt = None
    if gt is not None and cloud.is_file():
        config = EvalConfig(spacing=args.spacing, max_dist=args.max_dist, thresholds=tuple(args.thresholds))
        camera = scene.views[scene.view_ids[0]].camera
        result = evaluate_point_cloud(cloud, gt, out, config, render_camera=camera)
        report["point_cloud"] = result.to_dict()
        print(result.summary())
        print(f"scores, error-coloured PLYs and evaluation.png in {out}")
    if not report:
        raise MVSInputError(
            "nothing to evaluate: need depths/ with a scene that has GT depth, or a fused cloud with "
            "gt_points.ply / --dtu-root", recon)
    (out / "evaluation.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


def _add_import_colmap(sub: argparse._SubParsersAction) -> None:
    from mvs.data.colmap import ColmapImportConfig

    d = ColmapImportConfig()
    p = sub.add_parser(
        "import-colmap", help="turn a COLMAP sparse model and its photographs into a scene",
        description="Write SPARSE_DIR (COLMAP cameras/images/points3D, .bin or .txt, PINHOLE or "
        "SIMPLE_PINHOLE cameras: run `colmap image_undistorter` first) and the images in IMAGES_DIR as "
        "an MVSNet test-layout scene: cams with per-view depth ranges from the sparse points, pair.txt "
        "by triangulation angle, images resized to --max-dim. Units are the model's own.",
    )
    p.add_argument("sparse_dir", type=Path, help="COLMAP model folder (e.g. dense/sparse after image_undistorter)")
    p.add_argument("images_dir", type=Path, help="folder the model's image names refer to (e.g. dense/images)")
    p.add_argument("--out", type=Path, required=True, help="scene folder to write")
    p.add_argument("--max-dim", type=int, default=d.max_dim,
                   help=f"longer image side written (default {d.max_dim}; 0 keeps COLMAP's size)")
    p.add_argument("--depth-num", type=int, default=d.depth_num,
                   help=f"DEPTH_NUM (depth hypotheses) written to the cam files (default {d.depth_num})")
    p.add_argument("--depth-percentiles", type=float, nargs=2, default=list(d.depth_percentiles),
                   metavar=("LOW", "HIGH"), help="percentiles of each view's sparse point depths taken as "
                   f"its depth range (default {d.depth_percentiles[0]:g} {d.depth_percentiles[1]:g})")
    p.add_argument("--depth-margin", type=float, default=d.depth_margin,
                   help=f"relative widening of that range (default {d.depth_margin:g}: "
                   f"min*{1 - d.depth_margin:g}, max*{1 + d.depth_margin:g})")
    p.add_argument("--min-points", type=int, default=d.min_points,
                   help=f"fewest sparse points a view must observe (default {d.min_points})")
    p.add_argument("--skip-sparse-views", action="store_true",
                   help="drop views with fewer than --min-points points (with a warning) instead of failing")
    p.add_argument("--num-sources", type=int, default=d.num_sources,
                   help=f"source views per view in pair.txt (default {d.num_sources})")
    p.add_argument("--overwrite", action="store_true", help="replace a scene a previous import wrote to --out")
    p.set_defaults(func=cmd_import_colmap)


def cmd_import_colmap(args: argparse.Namespace) -> int:
    from mvs.data.colmap import ColmapImportConfig, import_colmap

    config = ColmapImportConfig(
        max_dim=args.max_dim or None, depth_num=args.depth_num, depth_percentiles=tuple(args.depth_percentiles),
        depth_margin=args.depth_margin, min_points=args.min_points, skip_sparse_views=args.skip_sparse_views,
        num_sources=args.num_sources, overwrite=args.overwrite,
    )
    summary = import_colmap(args.sparse_dir, args.images_dir, args.out, config, progress=True)
    width, height = summary["size"]
    print(f"scene       : {args.out} ({summary['views']} views at {width}x{height}, "
          f"{summary['source']['format']} model)")
    print(f"cams, pairs : {args.out / 'cams'}, {args.out / 'pair.txt'}")
    print(f"sparse cloud: {args.out / 'sparse_points.ply'} ({summary['sparse_points']:,} points)")
    if summary["skipped"]:
        print(f"skipped     : {', '.join(s['name'] for s in summary['skipped'])} (too few points)")
    print(f"next        : mvs reconstruct {args.out} --out OUT")
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the HTTP reconstruction service (Ray Serve) locally",
        description="Start a local Ray instance and the reconstruction service on HOST:PORT: POST /v1/reconstruct, "
        "POST /v1/jobs, GET /v1/jobs/{id}[/result], GET /v1/health, docs at /docs. Settings, replicas and "
        "resources come from --config (a Serve config YAML such as serve_config.yaml); flags override it.",
    )
    p.add_argument("--config", type=Path, help="Serve config YAML (default: built-in settings)")
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1, or the YAML's)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000, or the YAML's)")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the checkpoint shipped with mvs")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default auto)")
    p.add_argument("--replicas", type=int, default=None, help="fixed number of model replicas (no autoscaling)")
    p.add_argument("--num-cpus", type=float, default=None, help="CPUs per model replica (torch threads)")
    p.add_argument("--num-gpus", type=float, default=None, help="GPUs per model replica")
    p.add_argument("--max-upload-mb", type=float, default=None, help="largest request body, MiB (413 beyond)")
    p.add_argument("--job-ttl", type=float, default=None, help="seconds a finished job's result is kept")
    p.add_argument("--tmp-dir", type=Path, default=None, help="where per-request temporary directories go")
    p.add_argument("--address", default=None,
                   help="connect to a running Ray cluster (e.g. auto) instead of starting a local one")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: `import mvs.cli` must never import Ray.
    from mvs_serving.launch import serve_main

    return serve_main(args)


def _add_client(sub: argparse._SubParsersAction) -> None:
    from mvs.fusion import CONSISTENCY_MODES, FusionConfig

    p = sub.add_parser("client", help="talk to a running reconstruction service",
                       description="Client of `mvs serve` / the Ray Serve endpoint.")
    client_sub = p.add_subparsers(dest="client_command", required=True)
    rec = client_sub.add_parser(
        "reconstruct", help="send a scene, get the fused point cloud",
        description="Upload SCENE (MVSNet test-layout folder, or a zip/tar archive) and write the fused PLY "
        "(or the JSON report with --output json) to --out. Runs as a job (submit, poll, download) so no "
        "connection is held while the scene is processed; --sync uses one request instead (small scenes).",
    )
    rec.add_argument("scene", type=Path)
    rec.add_argument("--url", required=True, help="service root, e.g. http://127.0.0.1:8000")
    rec.add_argument("--out", type=Path, required=True, help="output PLY (or JSON with --output json)")
    rec.add_argument("--max-dim", type=int, default=None, help="longer image side processed (default: the service's)")
    rec.add_argument("--num-sources", type=int, default=None, help="source views per reference view (default: the service's, as mvs reconstruct)")
    rec.add_argument("--output", choices=["ply", "json"], default=None, help="ply (default) or json")
    rec.add_argument("--depth-line", choices=["interval", "min_max"], default=None)
    d = FusionConfig()
    rec.add_argument("--confidence-threshold", type=float, default=None, help=f"default {d.confidence_threshold}")
    rec.add_argument("--reprojection-error", type=float, default=None, help=f"pixels (default {d.reprojection_error})")
    rec.add_argument("--relative-depth-error", type=float, default=None, help=f"default {d.relative_depth_error}")
    rec.add_argument("--min-consistent-views", type=int, default=None, help=f"default {d.min_consistent_views}")
    rec.add_argument("--consistency", choices=CONSISTENCY_MODES, default=None, help=f"default {d.consistency}")
    rec.add_argument("--normals", action="store_true", default=None, help="unit normals per point in the PLY")
    rec.add_argument("--source-view", action="store_true", default=None,
                     help="each point's reference view id as a PLY vertex property")
    rec.add_argument("--sync", action="store_true", help="one request (POST /v1/reconstruct) instead of a job")
    rec.add_argument("--poll", type=float, default=1.0, help="seconds between job status polls")
    rec.add_argument("--timeout", type=float, default=None, help="give up waiting for the job after this many seconds")
    rec.add_argument("--http-timeout", type=float, default=600.0, help="seconds for each HTTP exchange")
    rec.set_defaults(func=cmd_client)
    health = client_sub.add_parser("health", help="print the service's health, limits and job counts")
    health.add_argument("--url", required=True)
    health.add_argument("--http-timeout", type=float, default=30.0)
    health.set_defaults(func=cmd_client)


def cmd_client(args: argparse.Namespace) -> int:
    from mvs_serving.client import client_main

    return client_main(args)


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    from mvs.finetune import add_arguments

    p = sub.add_parser(
        "finetune", help="adapt a checkpoint to one scene, self-supervised (no ground truth)",
        description="Fine-tune a checkpoint on SCENE without ground-truth depth: photometric consistency of "
        "source views warped with the predicted depth (SSIM + L1, per-pixel minimum over sources), edge-aware "
        "smoothness, and closeness to the original confident predictions. Writes CKPT (usable with "
        "`mvs reconstruct --checkpoint CKPT`), CKPT.finetune.yaml and CKPT.finetune.json (loss per step).",
    )
    add_arguments(p)
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from mvs.finetune import config_from_args, finetune, sidecar_paths

    try:
        config = config_from_args(args)
    except ValueError as error:  # a bad option value: report it like bad input
        raise MVSInputError(str(error)) from None
    summary = finetune(config, progress=True)
    before, after = summary["loss_before"], summary["loss_after"]
    config_path, log_path = sidecar_paths(config.out)
    print(f"self-supervised loss on {len(summary['eval_views'])} views: photometric "
          f"{before['photometric']:.4f} -> {after['photometric']:.4f}, total {before['loss']:.4f} -> "
          f"{after['loss']:.4f} ({summary['steps']} steps, {summary['seconds']:.0f} s on {summary['device']})")
    print(f"checkpoint  : {config.out}  (mvs reconstruct SCENE --out OUT --checkpoint {config.out})")
    print(f"config, log : {config_path}, {log_path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mvs", description="Learned multi-view stereo: calibrated photographs in, depth maps and a fused point cloud out."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_reconstruct(sub)
    _add_train(sub)
    _add_synth(sub)
    _add_info(sub)
    _add_fuse(sub)
    _add_evaluate(sub)
    _add_import_colmap(sub)
    _add_serve(sub)
    _add_client(sub)
    _add_finetune(sub)
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
