"""What the fusion thresholds trade: cloud accuracy against completeness, and cleanliness.

Reconstructs (once) the demo's held-out synthetic scene (seed 1,000,000, 49 views,
640x512, 0.2 mm ground-truth spacing, as ``mvs demo``) and, when present, DTU scan 24 at
800x600 with the shipped checkpoint; then fuses the same depth maps with each setting
and reports

* synthetic: DTU-protocol accuracy, completeness and overall (mm) against the exact
  ground truth, and the number of fused points;
* DTU scan 24: silhouette consistency of the fused cloud (as benchmarks/real_data.py)
  and the number of fused points.

Writes benchmarks/results/fusion_settings.json and fusion_settings.png (``--replot``
redraws the PNG from the JSON).

    .venv/bin/python benchmarks/fusion_settings.py [--settings '{"reprojection_error": 0.5}' ...]
        [--size 1600x1200] [--skip-dtu] [--checkpoint PATH --name fusion_settings_mine]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from tqdm import tqdm  # noqa: E402

from benchmarks.common import RESULTS, write_result  # noqa: E402
from benchmarks.finetune_effect import reconstruct  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED, DemoConfig  # noqa: E402
from mvs.evaluation import EvalConfig, GroundTruth, evaluate_point_cloud, silhouette_consistency  # noqa: E402
from mvs.fusion import FusionConfig, fuse_depth_maps  # noqa: E402
from mvs.inference import ReconstructConfig, read_depth_maps  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
GT_SPACING = DemoConfig().gt_spacing

# Changes to the defaults of FusionConfig (recorded in each result file): the first
# defaults (0.3, 3 views), lower and higher confidence bars, fewer and more
# agreeing views, looser and tighter geometric checks, and the dynamic ladder.
DEFAULT_SETTINGS = [
    {},
    {"confidence_threshold": 0.3, "min_consistent_views": 3},
    {"confidence_threshold": 0.3},
    {"confidence_threshold": 0.9},
    {"confidence_threshold": 0.98},
    {"min_consistent_views": 1},
    {"min_consistent_views": 3},
    {"relative_depth_error": 0.002},
    {"reprojection_error": 0.5},
    {"reprojection_error": 2.0, "relative_depth_error": 0.02},
    {"consistency": "dynamic"},
]


def label(setting: dict) -> str:
    return "defaults" if not setting else ", ".join(f"{k}={v}" for k, v in setting.items())


# Short names of the FusionConfig fields for the plot's labels.
PLOT_NAMES = {"confidence_threshold": "conf", "reprojection_error": "px", "relative_depth_error": "rel",
              "min_consistent_views": "views", "consistency": "mode"}


def short_label(setting: dict, defaults: dict | None = None) -> str:
    """Plot label; {} names the defaults of the run (they change between runs)."""
    if not setting and defaults:
        return (f"defaults (conf {defaults['confidence_threshold']}, "
                f"views {defaults['min_consistent_views']})")
    return "defaults" if not setting else ", ".join(f"{PLOT_NAMES.get(k, k)} {v}" for k, v in setting.items())


# Label positions tried in turn (offset in points, horizontal alignment) until one
# overlaps no label already placed.
LABEL_PLACES = [((4, 3), "left"), ((4, -10), "left"), ((-4, 3), "right"), ((-4, -10), "right"),
                ((4, 12), "left"), ((4, -19), "left")]


def annotate_apart(ax, points: list[tuple[float, float]], labels: list[str]) -> None:
    """Label each point, moving a label around its point while it overlaps an earlier one."""
    renderer = ax.figure.canvas.get_renderer()
    placed = []
    for (x, y), text in zip(points, labels, strict=True):
        for offset, align in LABEL_PLACES:
            label = ax.annotate(text, (x, y), fontsize=7, xytext=offset, textcoords="offset points", ha=align)
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
            label.remove()
        else:
            label = ax.annotate(text, (x, y), fontsize=7, xytext=LABEL_PLACES[0][0], textcoords="offset points")
            box = label.get_window_extent(renderer)
        placed.append(box)


def plot(rows: list[dict], synthetic: dict, path: Path, defaults: dict | None = None) -> None:
    has_dtu = any("dtu_silhouette" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_dtu else 1, figsize=(13 if has_dtu else 7, 5.5), squeeze=False)
    ax = axes[0, 0]
    for r in rows:
        ax.scatter(r["completeness"], r["accuracy"], s=30, color="tab:red" if r["setting"] == {} else "tab:blue")
    ax.set_xlabel("completeness (mm, lower is better)")
    ax.set_ylabel("accuracy (mm, lower is better)")
    ax.set_title(f"synthetic held-out scene, {synthetic['size']}, {synthetic['views']} views")
    ax.grid(alpha=0.3)
    if has_dtu:
        ax = axes[0, 1]
        for r in rows:
            ax.scatter(r["dtu_points"] / 1e6, 100 * r["dtu_silhouette"], s=30,
                       color="tab:red" if r["setting"] == {} else "tab:blue")
        ax.axhline(98.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("fused points (millions)")
        ax.set_ylabel("silhouette consistency (%)")
        ax.set_title("DTU scan 24, 800x600")
        ax.grid(alpha=0.3)
    fig.tight_layout()  # final axes limits before the labels are measured
    labels = [short_label(r["setting"], defaults) for r in rows]
    annotate_apart(axes[0, 0], [(r["completeness"], r["accuracy"]) for r in rows], labels)
    if has_dtu:
        annotate_apart(axes[0, 1], [(r["dtu_points"] / 1e6, 100 * r["dtu_silhouette"]) for r in rows], labels)
    fig.suptitle("Fusion settings (red: defaults; conf: confidence_threshold, px: reprojection_error, "
                 "rel: relative_depth_error, views: min_consistent_views)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", type=json.loads, default=DEFAULT_SETTINGS,
                        help="JSON objects of FusionConfig fields; {} is the defaults")
    parser.add_argument("--size", default="640x512")
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--num-views", type=int, default=ReconstructConfig().num_views,
                        help="reference + sources when reconstructing (default as mvs reconstruct)")
    parser.add_argument("--dtu-max-dim", type=int, default=800)
    parser.add_argument("--skip-dtu", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--name", default="fusion_settings", help="name of the JSON and the PNG")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the JSON")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads((RESULTS / f"{args.name}.json").read_text())
        plot(saved["rows"], saved["synthetic"], RESULTS / f"{args.name}.png", saved.get("defaults"))
        return
    for setting in args.settings:
        FusionConfig(**setting)  # a bad field fails here, before minutes of reconstruction

    width, height = (int(v) for v in args.size.split("x"))
    start = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        synth_dir = work / "synthetic"
        generate_scene(synth_dir, SynthConfig(views=args.views, width=width, height=height, gt_spacing=GT_SPACING),
                       HELD_OUT_SEED, progress=True)
        synth = load_scene(synth_dir)
        reconstruct(args.checkpoint, synth, work / "synthetic_recon", max(width, height), args.num_views,
                    args.device)
        synth_depths, synth_conf = read_depth_maps(work / "synthetic_recon", synth)
        gt = GroundTruth.from_synthetic_scene(synth_dir)
        dtu = None
        if not args.skip_dtu and (SHARED / "dtu_scan24").is_dir():
            dtu = load_scene(SHARED / "dtu_scan24")
            reconstruct(args.checkpoint, dtu, work / "dtu_recon", args.dtu_max_dim, args.num_views, args.device)
            dtu_depths, dtu_conf = read_depth_maps(work / "dtu_recon", dtu)
        elif not args.skip_dtu:
            print(f"skipping DTU scan 24: {SHARED / 'dtu_scan24'} not present")

        for setting in tqdm(args.settings, desc="fusion settings", unit="setting"):
            config = FusionConfig(**setting)
            tick = time.perf_counter()
            cloud = fuse_depth_maps(synth, synth_depths, synth_conf, config)
            cloud.write_ply(work / "fused.ply")
            scores = evaluate_point_cloud(work / "fused.ply", gt, work / "evaluation",
                                          EvalConfig(write_png=False, write_plys=False))
            row = {"setting": setting, "accuracy": scores.accuracy, "completeness": scores.completeness,
                   "overall": scores.overall, "synthetic_points": int(len(cloud.points))}
            if dtu is not None:
                cloud = fuse_depth_maps(dtu, dtu_depths, dtu_conf, config)
                silhouette = silhouette_consistency(cloud.points, cloud.source_view, dtu)
                row.update(dtu_silhouette=silhouette.fraction, dtu_points=int(len(cloud.points)))
            row["seconds"] = time.perf_counter() - tick
            rows.append(row)
            tqdm.write(f"{label(setting):45s} accuracy {row['accuracy']:.3f}  completeness {row['completeness']:.3f}  "
                       f"overall {row['overall']:.3f} mm"
                       + (f"  DTU silhouette {100 * row['dtu_silhouette']:.2f}% of {row['dtu_points']:,} points"
                          if dtu is not None else ""))
    RESULTS.mkdir(parents=True, exist_ok=True)
    synthetic = {"seed": HELD_OUT_SEED, "size": args.size, "views": args.views, "gt_spacing": GT_SPACING}
    plot(rows, synthetic, RESULTS / f"{args.name}.png", FusionConfig().__dict__)
    write_result(args.name, {
        "synthetic": synthetic,
        "dtu_max_dim": None if dtu is None else args.dtu_max_dim, "num_views": args.num_views,
        "checkpoint": str(args.checkpoint), "defaults": FusionConfig().__dict__, "rows": rows,
        "total_seconds": time.perf_counter() - start,
    })


if __name__ == "__main__":
    main()
