"""The main job on the embedded default data: held-out synthetic scene -> depth maps -> cloud -> scores.

``mvs demo`` (and so ``make demo``) and ``benchmarks/fused_accuracy.py`` both run
:func:`run_demo`, so the benchmark's figures are those of the command users run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mvs.data.synthetic import SynthConfig
from mvs.fusion import FusionConfig
from mvs.inference import ReconstructConfig

# Seeds at or above this are never used for training data: held-out scenes for demos and
# benchmarks come from here.
HELD_OUT_SEED = 1_000_000


@dataclass
class DemoConfig:
    views: int = 49
    width: int = 640
    height: int = 512
    seed: int = HELD_OUT_SEED
    num_views: int = ReconstructConfig().num_views  # reference + sources per depth map
    coarse_max_dim: int | None = ReconstructConfig().coarse_max_dim  # scale cascade (mvs reconstruct)
    early_views: int | None = ReconstructConfig().early_views  # stages before the last (mvs reconstruct)
    coarse_views: int | None = ReconstructConfig().coarse_views  # views of the first pass (mvs reconstruct)
    checkpoint: Path | None = None  # None: the checkpoint shipped with mvs
    device: str = "auto"  # cpu, cuda, or auto
    # GT surface samples about this far apart (mm). The protocol thins the prediction to
    # 0.2 mm; a sparser GT would add about half its spacing to the accuracy of even a
    # perfect cloud (0.5 mm: exact depth maps scored 0.26 mm accuracy at 640x512, 0.12 mm
    # with 0.2 mm).
    gt_spacing: float = SynthConfig().gt_spacing
    fusion: FusionConfig = field(default_factory=FusionConfig)


def run_demo(config: DemoConfig, out: Path, log: Callable[[str], None] = print, progress: bool = True) -> dict:
    """Generate, reconstruct, fuse and score; write ``out/demo.json`` and return its contents.

    Layout of ``out``: ``scene/`` (the synthetic scene), ``reconstruction/`` (depth maps,
    confidence, previews, ``fused.ply``), ``evaluation/`` (scores, error-coloured PLYs,
    ``evaluation.png``) and ``demo.json``.
    """
    import torch

    from mvs.checkpoint import load_model
    from mvs.data.scene import load_scene
    from mvs.data.synthetic import generate_scene
    from mvs.evaluation import EvalConfig, GroundTruth, evaluate_depth_folder, evaluate_point_cloud
    from mvs.inference import reconstruct_scene

    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    scene_dir, recon_dir = out / "scene", out / "reconstruction"
    start = time.perf_counter()
    log(f"[1/4] generating a held-out synthetic scene (seed {config.seed}, {config.views} views, "
        f"{config.width}x{config.height}, millimetres) in {scene_dir}")
    generate_scene(scene_dir, SynthConfig(views=config.views, width=config.width, height=config.height,
                                          gt_spacing=config.gt_spacing), config.seed, progress=progress)
    scene = load_scene(scene_dir)

    log(f"[2/4] reconstructing depth maps with the {'given' if config.checkpoint else 'shipped'} checkpoint on {device}")
    model, _ = load_model(config.checkpoint, device)
    reconstruct = ReconstructConfig(max_dim=max(config.width, config.height), coarse_max_dim=config.coarse_max_dim,
                                    early_views=config.early_views, num_views=config.num_views,
                                    coarse_views=config.coarse_views, device=device,
                                    fuse=True, fusion=config.fusion)
    summary = reconstruct_scene(scene, model, recon_dir, reconstruct, progress=progress)
    log(f"      {summary['seconds_per_view']:.2f} s per view; fused {summary['fused_points']:,} points")

    log("[3/4] scoring depth maps against the exact ground truth")
    depth = evaluate_depth_folder(recon_dir, scene).total.to_dict()
    within = ", ".join(f"{100 * v:.1f}% within {t} mm" for t, v in depth["within"].items())
    log(f"      mean abs error {depth['mae']:.2f} mm; {within}")

    log("[4/4] scoring the fused point cloud (DTU protocol)")
    gt = GroundTruth.from_synthetic_scene(scene_dir)
    camera = scene.views[scene.view_ids[0]].camera
    result = evaluate_point_cloud(recon_dir / "fused.ply", gt, out / "evaluation", EvalConfig(), camera)
    report = {
        "seconds": time.perf_counter() - start,
        "config": asdict(config),
        "reconstruction": summary,
        "depth": depth,
        "point_cloud": result.to_dict(),
        "files": {
            "point_cloud": str(recon_dir / "fused.ply"),
            "picture": str(out / "evaluation" / "evaluation.png"),
            "previews": str(recon_dir / "preview"),
            "scores": str(out / "demo.json"),
        },
    }
    text = json.dumps(report, indent=2, default=str)
    (out / "demo.json").write_text(text)
    return json.loads(text)  # what was written: paths as strings, safe for callers to dump again
