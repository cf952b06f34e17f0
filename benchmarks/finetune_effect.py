"""Effect of self-supervised fine-tuning (``mvs finetune``) on depth quality, before vs after.

Synthetic: held-out scenes (seeds from HELD_OUT_SEED + 1, never used in training) with a
changed appearance: 7 lighting conditions per scene and lighting 0 written, a single
directional key light with weak ambient. The shipped checkpoint was trained on rigs of
4 lightings whose brightest one (all lights on) is one in four of its samples; lighting 0
of a 7-light scene is never that one. Each scene is reconstructed with the shipped
checkpoint, fine-tuned on its own images (no ground truth), reconstructed again; depth
maps are scored against the exact ground truth (fraction of pixels within 1/2/4 mm, MAE).

DTU scan 24 (``../shared/data/dtu_scan24``, skipped when absent): the same before/after
with the measures of ``benchmarks/real_data.py`` at 800x600: cross-view depth consistency
(pixels consistent with >= 2 of 4 neighbours) and silhouette consistency of the fused
cloud. Masks are never used for fine-tuning.

Writes benchmarks/results/finetune_effect.json, finetune_loss.png (loss per step of
each run), finetune_synthetic_error.png (|depth error| before | after) and
finetune_dtu_depth.png (depth before | after); pictures hold only our outputs.

    .venv/bin/python benchmarks/finetune_effect.py [--scenes 2] [--steps N] [--skip-dtu]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.config import load_config, to_dict  # noqa: E402
from mvs.data.scene import Scene, load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.evaluation import (  # noqa: E402
    DepthMetrics,
    cross_view_depth_consistency,
    evaluate_depth_folder,
    silhouette_consistency,
)
from mvs.finetune import FinetuneConfig, finetune, sidecar_paths  # noqa: E402
from mvs.fusion import FusionConfig, fuse_depth_maps  # noqa: E402
from mvs.inference import ReconstructConfig, read_depth_maps, reconstruct_scene  # noqa: E402
from mvs.io import read_pfm, write_image  # noqa: E402
from mvs.visualize import colorize  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
# The changed appearance of the held-out synthetic scenes (see the module docstring).
APPEARANCE = {"lights": 7, "test_light": 0}


def reconstruct(checkpoint: Path, scene: Scene, out: Path, max_dim: int, num_views: int, device: str) -> dict:
    model, _ = load_model(checkpoint, device)
    config = ReconstructConfig(max_dim=max_dim, num_views=num_views, device=device, previews=False, fuse=False)
    return reconstruct_scene(scene, model, out, config, progress=False)


def run_finetune(scene_dir: Path, out: Path, args: argparse.Namespace, max_dim: int) -> tuple[dict, list[float]]:
    overrides = [f"scene={scene_dir}", f"out={out}", f"checkpoint={args.checkpoint}", f"max_dim={max_dim}",
                 f"device={args.device}"] + ([f"steps={args.steps}"] if args.steps is not None else []) + args.set
    config = load_config(FinetuneConfig, None, overrides)
    summary = finetune(config, progress=True)
    log = json.loads(sidecar_paths(out)[1].read_text())["log"]
    summary["config"] = to_dict(config)
    return summary, [entry["loss"] for entry in log]


def error_panel(depth: np.ndarray, gt: np.ndarray, valid: np.ndarray, limit: float) -> np.ndarray:
    """|depth - gt| colour-mapped on [0, limit] (black: no ground truth)."""
    return colorize(np.abs(depth - gt), valid, 0.0, limit, cmap="magma")


def synthetic(args: argparse.Namespace, work: Path) -> tuple[dict, list[np.ndarray], dict[str, list[float]]]:
    width, height = (int(v) for v in args.size.split("x"))
    synth = SynthConfig(views=args.views, width=width, height=height, **APPEARANCE)
    per_scene, pooled, panels, curves = [], {"before": [], "after": []}, [], {}
    for k in range(args.scenes):
        seed = HELD_OUT_SEED + 1 + k
        scene_dir = work / f"synthetic_{seed}"
        generate_scene(scene_dir, synth, seed, progress=True)
        scene = load_scene(scene_dir)
        tick = time.perf_counter()
        reconstruct(args.checkpoint, scene, work / f"before_{seed}", max(width, height), args.num_views, args.device)
        before = evaluate_depth_folder(work / f"before_{seed}", scene)
        checkpoint = work / f"finetuned_{seed}.pt"
        summary, curves[f"synthetic seed {seed}"] = run_finetune(scene_dir, checkpoint, args,
                                                                   args.finetune_max_dim or max(width, height))
        reconstruct(checkpoint, scene, work / f"after_{seed}", max(width, height), args.num_views, args.device)
        after = evaluate_depth_folder(work / f"after_{seed}", scene)
        pooled["before"].append(before.total)
        pooled["after"].append(after.total)
        result = {"seed": seed, "before": before.total.to_dict(), "after": after.total.to_dict(),
                  "finetune_seconds": summary["seconds"], "self_supervised_loss_before": summary["loss_before"],
                  "self_supervised_loss_after": summary["loss_after"], "seconds": time.perf_counter() - tick}
        per_scene.append(result)
        print(f"seed {seed}: within 2 mm {result['before']['within']['2']:.4f} -> {result['after']['within']['2']:.4f}, "
              f"MAE {result['before']['mae']:.2f} -> {result['after']['mae']:.2f} mm", flush=True)
        view = scene.view_ids[len(scene.view_ids) // 2]
        gt, valid = scene.depth(view), scene.mask(view) & (scene.depth(view) > 0)
        before_depth = read_pfm(work / f"before_{seed}" / "depths" / f"{view:08d}.pfm")
        after_depth = read_pfm(work / f"after_{seed}" / "depths" / f"{view:08d}.pfm")
        panels.append(np.concatenate([error_panel(before_depth, gt, valid, 4.0),
                                      error_panel(after_depth, gt, valid, 4.0)], axis=1))
    results = {
        "size": args.size, "views": args.views, "appearance": APPEARANCE,
        "pooled_before": DepthMetrics.combine(pooled["before"]).to_dict(),
        "pooled_after": DepthMetrics.combine(pooled["after"]).to_dict(),
        "scenes": per_scene,
    }
    return results, panels, curves


def consistency(scene: Scene, recon: Path) -> dict:
    depths, confidences = read_depth_maps(recon, scene)
    cross = cross_view_depth_consistency(depths, scene)
    cross_in_masks = cross_view_depth_consistency(depths, scene, use_masks=True)
    cloud = fuse_depth_maps(scene, depths, confidences, FusionConfig())
    silhouette = silhouette_consistency(cloud.points, cloud.source_view, scene)
    return {"cross_view_consistency": cross.fraction, "cross_view_consistency_inside_masks": cross_in_masks.fraction,
            "silhouette_consistency": silhouette.fraction, "silhouette_candidates": silhouette.candidates,
            "fused_points": int(len(cloud.points))}


def dtu(args: argparse.Namespace, work: Path) -> tuple[dict | None, list[np.ndarray], dict[str, list[float]]]:
    root = SHARED / "dtu_scan24"
    if not root.is_dir():
        print(f"skipping DTU scan 24: {root} not present")
        return None, [], {}
    scene = load_scene(root)
    tick = time.perf_counter()
    reconstruct(args.checkpoint, scene, work / "dtu_before", args.dtu_max_dim, args.num_views, args.device)
    before = consistency(scene, work / "dtu_before")
    print(f"DTU before: {before}", flush=True)
    checkpoint = work / "finetuned_dtu.pt"
    summary, curve = run_finetune(root, checkpoint, args, args.finetune_max_dim or args.dtu_max_dim)
    summary_info = reconstruct(checkpoint, scene, work / "dtu_after", args.dtu_max_dim, args.num_views, args.device)
    after = consistency(scene, work / "dtu_after")
    print(f"DTU after: {after}", flush=True)
    panels = []
    for view in scene.view_ids[:: max(1, len(scene.view_ids) // 4)][:4]:
        camera = scene.views[view].camera
        pair = [colorize(read_pfm(work / name / "depths" / f"{view:08d}.pfm"), None, camera.depth_min,
                         camera.depth_max) for name in ("dtu_before", "dtu_after")]
        panels.append(np.concatenate(pair, axis=1))
    result = {"scene": "dtu_scan24", "max_dim": args.dtu_max_dim, "processed_size": summary_info["processed_size"],
              "before": before, "after": after, "finetune_seconds": summary["seconds"],
              "self_supervised_loss_before": summary["loss_before"],
              "self_supervised_loss_after": summary["loss_after"], "finetune_config": summary["config"],
              "seconds": time.perf_counter() - tick}
    return result, panels, {"DTU scan 24": curve}


def save_loss_plot(curves: dict[str, list[float]], path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=110)
    for name, losses in curves.items():
        values = np.asarray(losses)
        window = max(1, min(10, len(values) // 5))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axis.plot(np.arange(len(smooth)) + window - 1, smooth, label=name)
    axis.set_xlabel("step")
    axis.set_ylabel("self-supervised loss (running mean)")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def stack_rows(panels: list[np.ndarray]) -> np.ndarray:
    width = min(p.shape[1] for p in panels)
    return np.concatenate([p[:, :width] for p in panels], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--scenes", type=int, default=2, help="held-out synthetic scenes")
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--size", default="640x512", help="synthetic image size (reconstructed at this size)")
    parser.add_argument("--num-views", type=int, default=5, help="reference + sources when reconstructing")
    parser.add_argument("--steps", type=int, default=None, help=f"fine-tuning steps (default {FinetuneConfig().steps})")
    parser.add_argument("--finetune-max-dim", type=int, default=None,
                        help="resolution fine-tuned at (default: the one each scene is reconstructed at)")
    parser.add_argument("--dtu-max-dim", type=int, default=800, help="as benchmarks/real_data.py")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-dtu", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further fine-tuning settings, e.g. loss.prior_weight=0.05 (as mvs finetune --set)")
    parser.add_argument("--name", default="finetune_effect", help="name of the JSON and the prefix of the PNGs")
    args = parser.parse_args()

    # finetune_effect -> finetune_*.png (the names the README shows); other names prefix their own.
    prefix = "finetune" if args.name == "finetune_effect" else args.name
    start = time.perf_counter()
    result: dict = {"checkpoint": str(args.checkpoint), "device": args.device}
    curves: dict[str, list[float]] = {}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if not args.skip_synthetic:
            result["synthetic"], panels, found = synthetic(args, work)
            curves.update(found)
            write_image(RESULTS / f"{prefix}_synthetic_error.png", stack_rows(panels))
        if not args.skip_dtu:
            result["dtu_scan24"], panels, found = dtu(args, work)
            curves.update(found)
            if panels:
                write_image(RESULTS / f"{prefix}_dtu_depth.png", stack_rows(panels))
    if curves:
        save_loss_plot(curves, RESULTS / f"{prefix}_loss.png")
        result["loss_per_step"] = {name: [round(v, 5) for v in values] for name, values in curves.items()}
    result["total_seconds"] = time.perf_counter() - start
    write_result(args.name, result)


if __name__ == "__main__":
    main()
