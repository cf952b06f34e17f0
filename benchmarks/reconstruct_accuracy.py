"""Depth accuracy of a checkpoint on held-out synthetic scenes (seeds never used in training).

For each image size, generates held-out scenes, runs ``mvs reconstruct``'s depth stage with
each number of views (reference + sources) and scores every view against the exact ground
truth: the fraction of valid GT pixels within 1, 2 and 4 mm (missing predictions count as
failures) and the MVSNet-style error rates. Writes reconstruct_accuracy.json and a PNG.

    .venv/bin/python benchmarks/reconstruct_accuracy.py [--sizes 640x512 1600x1152] [--scenes 3 1]
        [--num-views 5 11] [--coarse-max-dim 640] [--early-views 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS, write_result  # noqa: E402
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model  # noqa: E402
from mvs.data.scene import load_scene  # noqa: E402
from mvs.data.synthetic import SynthConfig, generate_scene  # noqa: E402
from mvs.demo import HELD_OUT_SEED  # noqa: E402
from mvs.evaluation import DepthMetrics, evaluate_depth_folder  # noqa: E402
from mvs.inference import ReconstructConfig, reconstruct_scene  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--sizes", nargs="+", default=["640x512", "1600x1152"])
    parser.add_argument("--scenes", type=int, nargs="+", default=[3, 1],
                        help="held-out scenes per size (one value: the same for every size)")
    parser.add_argument("--views", type=int, default=49)
    parser.add_argument("--num-views", type=int, nargs="+", default=[5, 11],
                        help="reference + sources (5: mvs reconstruct's default; 11: all ten sources of pair.txt)")
    parser.add_argument("--coarse-max-dim", type=int, default=ReconstructConfig().coarse_max_dim,
                        help="scale cascade's first pass (default as mvs reconstruct; 0: off)")
    parser.add_argument("--early-views", type=int, default=ReconstructConfig().early_views,
                        help="views of the stages before the last (default as mvs reconstruct)")
    parser.add_argument("--coarse-views", type=int, default=ReconstructConfig().coarse_views,
                        help="views of the first pass (default as mvs reconstruct)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="reconstruct_accuracy")
    args = parser.parse_args()

    model, payload = load_model(args.checkpoint, args.device)
    if len(args.scenes) not in (1, len(args.sizes)):
        parser.error("--scenes takes one value or one per size")
    scenes_per_size = dict(zip(args.sizes, args.scenes * len(args.sizes) if len(args.scenes) == 1 else args.scenes,
                               strict=True))
    results: dict[str, dict[str, dict]] = {}
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        pooled: dict[int, list] = {n: [] for n in args.num_views}
        per_scene: dict[int, list] = {n: [] for n in args.num_views}
        for k in range(scenes_per_size[size]):
            seed = HELD_OUT_SEED + k
            with tempfile.TemporaryDirectory() as tmp:
                scene_dir = Path(tmp) / "scene"
                generate_scene(scene_dir, SynthConfig(views=args.views, width=width, height=height), seed)
                scene = load_scene(scene_dir)
                for num_views in args.num_views:
                    out = Path(tmp) / f"recon_{num_views}"
                    start = time.perf_counter()
                    summary = reconstruct_scene(
                        scene, model, out,
                        ReconstructConfig(max_dim=max(width, height), coarse_max_dim=args.coarse_max_dim or None,
                                          num_views=num_views, early_views=args.early_views, device=args.device,
                                          coarse_views=args.coarse_views,
                                          previews=False, fuse=False),
                    )
                    evaluation = evaluate_depth_folder(out, scene)
                    shutil.rmtree(out)
                    pooled[num_views].append(evaluation.total)
                    scores = evaluation.total.to_dict()
                    per_scene[num_views].append({"seed": seed, "seconds": time.perf_counter() - start,
                                                 "seconds_per_view": summary["seconds_per_view"],
                                                 "coarse_size": summary["coarse_size"], **scores})
                    print(f"{size}, {num_views} views, seed {seed}: {scores}", flush=True)
        results[size] = {}
        for num_views in args.num_views:
            combined = DepthMetrics.combine(pooled[num_views]).to_dict()
            results[size][str(num_views)] = {"pooled": combined, "scenes": per_scene[num_views]}
            print(f"{size}, {num_views} views, pooled over {scenes_per_size[size]} scenes: {combined}")
    plot(results, RESULTS / f"{args.name}.png")
    write_result(args.name, {
        "checkpoint": str(args.checkpoint),
        "checkpoint_meta": {k: v for k, v in payload.get("meta", {}).items() if k != "train_config"},
        "views_per_scene": args.views,
        "scenes_per_size": scenes_per_size,
        "num_views": args.num_views,
        "coarse_max_dim": args.coarse_max_dim or None,
        "early_views": args.early_views,
        "coarse_views": args.coarse_views,
        "device": args.device,
        "results": results,  # size -> number of views -> pooled scores and per-scene scores
    })


def plot(results: dict[str, dict[str, dict]], path: Path) -> None:
    """Bars: share of pixels within 1/2/4 mm per image size and number of views."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{size}\n{n} views" for size, by_views in results.items() for n in by_views]
    cells = [cell["pooled"]["within"] for by_views in results.values() for cell in by_views.values()]
    fig, ax = plt.subplots(figsize=(1.6 + 1.5 * len(labels), 3.6))
    x = np.arange(len(labels))
    for offset, threshold in zip((-0.25, 0.0, 0.25), ("1", "2", "4"), strict=True):
        values = [100 * cell[threshold] for cell in cells]
        bars = ax.bar(x + offset, values, width=0.25, label=f"within {threshold} mm")
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.axhline(85, color="grey", lw=0.8, ls="--")
    ax.axhline(92, color="grey", lw=0.8, ls=":")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("% of valid GT pixels")
    ax.set_ylim(0, 112)
    ax.set_title("Depth accuracy, held-out synthetic scenes (49 views each)\n(targets at 1600x1152: 85% within 2 mm, 92% within 4 mm)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
