"""Scale cascade: accuracy and time per view of each first-pass size at 1600x1152.

``mvs reconstruct --coarse-max-dim N`` runs the whole network at N px first; that depth
guides the last stage at the processed size, after the stages before it ran there with
``--early-views`` views (0: they are skipped, the last stage alone runs around the first
pass). This benchmark scores each first-pass size and early-view count (and coarse 0:
every stage at 1600x1152 with all views, the one-scale network) on a held-out
synthetic scene (seed never used in training), with 5 and 11 views, over every
``--every``-th reference view: fraction of valid GT pixels within 1/2/4 mm, MAE and
seconds per view (network, resizing included). Also the same fractions over the object
pixels alone (GT more than 1 mm above the scene's ground plane): a few percent of the
pixels, and what the DTU protocol's completeness measures. Writes scale_cascade.json, a PNG of the
scores and scale_cascade_errors.png (the first reference view's error maps, per setting).

    .venv/bin/python benchmarks/scale_cascade.py [--size 1600x1152] [--coarse 0 640 960]
        [--early-views 0 5] [--num-views 5 11] [--every 4] [--seed 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.evaluation import DepthMetrics  # noqa: E402
from mvs.evaluation.depth import depth_metrics  # noqa: E402
from mvs.geometry import backproject_depth  # noqa: E402
from mvs.inference import first_pass_size, predict_view  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--size", default="1600x1152")
    parser.add_argument("--coarse", type=int, nargs="+", default=[0, 640, 960],
                        help="first-pass longer sides (0: one scale)")
    parser.add_argument("--early-views", type=int, nargs="+", default=[0, 5],
                        help="with a first pass: views of the stages before the last (0: skip them)")
    parser.add_argument("--num-views", type=int, nargs="+", default=[5, 11])
    parser.add_argument("--coarse-views", type=int, default=None,
                        help="views of the first pass (default: the same as --num-views, as in the rows "
                             "recorded so far; mvs reconstruct's default is 11)")
    parser.add_argument("--views", type=int, default=49, help="views in the scene")
    parser.add_argument("--every", type=int, default=4, help="score every N-th view as reference")
    parser.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="scale_cascade")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    model, _ = load_model(args.checkpoint, args.device)
    rows = []
    error_maps: list[tuple[str, np.ndarray]] = []  # (label, |depth - GT|) of the first reference view
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = Path(tmp) / "scene"
        generate_scene(scene_dir, SynthConfig(views=args.views, width=width, height=height), args.seed)
        scene = load_scene(scene_dir)
        references = scene.view_ids[:: args.every]
        plane = np.asarray(json.loads((scene_dir / "scene.json").read_text())["ground_plane"], dtype=np.float64)
        objects = {ref: object_pixels(scene, ref, plane) for ref in references}
        first_image = scene.image(references[0])
        settings = [(coarse, early) for coarse in args.coarse for early in ([None] if not coarse else args.early_views)]
        for num_views in args.num_views:
            for coarse, early_views in settings:
                coarse_size = first_pass_size((width, height), (width, height), coarse or None)
                metrics, object_metrics, seconds = [], [], []
                for ref in references:
                    sources = scene.source_views(ref, num_views - 1)
                    coarse_sources = scene.source_views(ref, args.coarse_views - 1) if args.coarse_views else None
                    start = time.perf_counter()
                    depth, _, _ = predict_view(model, scene, ref, sources, width, height, args.device, coarse_size,
                                               early_views, coarse_sources=coarse_sources)
                    seconds.append(time.perf_counter() - start)
                    gt = scene.depth(ref)
                    metrics.append(depth_metrics(depth, gt))
                    object_metrics.append(depth_metrics(np.where(objects[ref], depth, 0), np.where(objects[ref], gt, 0)))
                    if ref == references[0]:
                        label = setting_label(coarse_size, early_views)
                        error_maps.append((f"{label}, {num_views} views", np.where(gt > 0, np.abs(depth - gt), np.nan)))
                total = DepthMetrics.combine(metrics).to_dict()
                on_objects = DepthMetrics.combine(object_metrics).to_dict()
                row = {"coarse_max_dim": coarse or None, "coarse_size": coarse_size, "early_views": early_views,
                       "num_views": num_views, "coarse_views": args.coarse_views or num_views,
                       "seconds_per_view": float(np.mean(seconds)), "within": total["within"], "mae": total["mae"],
                       "objects": {"within": on_objects["within"], "mae": on_objects["mae"],
                                   "pixels": on_objects["valid_pixels"]}}
                rows.append(row)
                label = setting_label(coarse_size, early_views)
                print(f"{num_views} views, {label}: within 1/2/4 mm "
                      + " / ".join(f"{100 * total['within'][k]:.1f}%" for k in ("1", "2", "4"))
                      + f", MAE {total['mae']:.2f}; object pixels within 2/4 mm "
                      + " / ".join(f"{100 * on_objects['within'][k]:.1f}%" for k in ("2", "4"))
                      + f"; {row['seconds_per_view']:.2f} s/view", flush=True)
    plot(rows, width, height, RESULTS / f"{args.name}.png")
    plot_errors(first_image, error_maps, RESULTS / f"{args.name}_errors.png")
    write_result(args.name, {
        "checkpoint": str(args.checkpoint), "size": [width, height], "seed": args.seed,
        "scene_views": args.views, "references": len(references), "device": args.device, "rows": rows,
    })


def setting_label(coarse_size: tuple[int, int] | None, early_views: int | None) -> str:
    if coarse_size is None:
        return "one scale"
    first = f"{coarse_size[0]}x{coarse_size[1]} first"
    return f"{first}, last stage only" if early_views == 0 else f"{first}, early stages {early_views} views"


def object_pixels(scene, view: int, plane: np.ndarray, height_above: float = 1.0) -> np.ndarray:
    """(H, W) bool: pixels whose GT point lies more than ``height_above`` scene units above
    the ground plane (a, b, c, d; +normal is up)."""
    camera = scene.views[view].camera
    gt = scene.depth(view)
    world = backproject_depth(torch.from_numpy(gt)[None].double(), torch.from_numpy(camera.intrinsics)[None],
                              torch.from_numpy(camera.extrinsics)[None])[0].numpy()  # (H, W, 3)
    height = (world @ plane[:3] + plane[3]) / np.linalg.norm(plane[:3])
    return (gt > 0) & (height > height_above)


def plot(rows: list[dict], width: int, height: int, path: Path) -> None:
    """Bars: within 2 and 4 mm per first-pass size, one group per number of views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.3 * len(rows), 4.0))
    x = np.arange(len(rows))
    for offset, threshold in ((-0.3, "2"), (-0.1, "4")):
        bars = ax.bar(x + offset, [100 * r["within"][threshold] for r in rows], width=0.2,
                      label=f"all pixels within {threshold} mm")
        ax.bar_label(bars, fmt="%.0f", fontsize=6)
    for offset, threshold in ((0.1, "2"), (0.3, "4")):
        bars = ax.bar(x + offset, [100 * r["objects"]["within"][threshold] for r in rows], width=0.2,
                      label=f"object pixels within {threshold} mm", hatch="//", alpha=0.8)
        ax.bar_label(bars, fmt="%.0f", fontsize=6)
    labels = [setting_label(r["coarse_size"], r.get("early_views", 0)).replace(", ", "\n")
              + f"\n{r['num_views']} views, {r['seconds_per_view']:.1f} s/view" for r in rows]
    ax.set_xticks(x, labels, fontsize=7)
    ax.axhline(85, color="grey", lw=0.8, ls="--")
    ax.axhline(92, color="grey", lw=0.8, ls=":")
    ax.set_ylim(0, 112)
    ax.set_ylabel("% of valid GT pixels")
    ax.set_title(f"Scale cascade at {width}x{height}: first pass at N px guiding the full-size last stage\n"
                 "(held-out synthetic scene; targets 85% within 2 mm, 92% within 4 mm)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", ncol=4)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


def plot_errors(image: np.ndarray, error_maps: list[tuple[str, np.ndarray]], path: Path) -> None:
    """The reference image and each setting's |depth - GT| (0 to 8 mm; blank: no GT) side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + (len(error_maps) + 1) // 2
    fig, axes = plt.subplots(2, columns, figsize=(3.2 * columns, 5.4), squeeze=False)
    axes[0, 0].imshow(image)
    axes[0, 0].set_title("reference image", fontsize=8)
    shown = None
    for ax, (label, error) in zip(axes[:, 1:].ravel(), error_maps, strict=False):
        shown = ax.imshow(error, cmap="turbo", vmin=0, vmax=8)
        ax.set_title(f"{label}\n{100 * float(np.mean(error[np.isfinite(error)] > 2)):.1f}% off by > 2 mm", fontsize=8)
    for ax in axes.ravel():
        ax.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.6, label="|depth - GT|, mm (clipped at 8)")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
