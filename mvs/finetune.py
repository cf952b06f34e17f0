"""Self-supervised fine-tuning of a checkpoint on one scene (no ground-truth depth needed).

``mvs finetune SCENE --out CKPT`` calls :func:`finetune`; the Ray job (``jobs/finetune.py``)
runs the same function inside a Ray task. Each step takes one reference view of the
scene (at a reduced resolution, optionally a random crop of it) with its best source
views from ``pair.txt``, runs the network and minimises
:func:`mvs.models.self_supervised_loss.self_supervised_loss`: photometric consistency of
the sources warped with the predicted depth, edge-aware smoothness, and closeness to the
*original* checkpoint's confident predictions (a frozen copy of the starting network
gives them, on exactly the same input).

BatchNorm stays in eval mode throughout: a step sees one sample, whose statistics would
replace the running ones learned over many scenes. In eval mode the network folds each
BatchNorm into its convolution, and gradients still reach both (only the running
statistics are frozen).

Outputs, for ``--out DIR/NAME.pt``::

    DIR/NAME.pt              the fine-tuned checkpoint (model config inside; ``meta``
                             records the scene, the starting checkpoint and the settings)
    DIR/NAME.finetune.yaml   the FinetuneConfig that produced it
    DIR/NAME.finetune.json   loss terms per step, and the self-supervised loss of a fixed
                             set of views before and after fine-tuning
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mvs.cameras import Camera, stack_cameras
from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model, save_checkpoint
from mvs.config import load_config, save_config, to_dict
from mvs.data.dataset import fit_size, resize_view
from mvs.data.scene import Scene, load_scene
from mvs.errors import MVSInputError
from mvs.inference import ReconstructConfig
from mvs.models import CascadeMVSNet
from mvs.models.self_supervised_loss import SelfSupervisedConfig, self_supervised_loss


@dataclass
class FinetuneConfig:
    """Settings of one fine-tuning run.

    Attributes:
        scene: scene folder (MVSNet test layout or BlendedMVS); ground truth is not used.
        out: path of the fine-tuned checkpoint to write.
        checkpoint: starting checkpoint (None: the one shipped with mvs).
        steps: optimiser steps (one reference view each).
        lr: Adam learning rate (cosine decay to 10 % of it over the run).
        weight_decay: Adam (L2) weight decay.
        grad_clip: gradient-norm clipping.
        num_views: reference + sources given to the network; by default as many as
            ``mvs reconstruct`` gives it (on DTU scan 24, fine-tuning with 4 views lowered
            the fused cloud's silhouette consistency at 5-view reconstruction, with 5 it
            rose: benchmarks/finetune_effect.py).
        source_pool: sources drawn at random from the best ``source_pool`` of pair.txt
            (``num_views - 1`` or fewer: always the best ones, as ``mvs reconstruct``).
        max_dim: longer image side the scene is resized to (None: as stored).
        crop: (width, height) random crop of the resized reference and sources fed to the
            network (None: whole images). The photometric loss warps whole source images.
        eval_views: views (evenly spaced, centre crop) on which the self-supervised loss
            is measured before and after fine-tuning.
        device: ``auto`` (cuda when available), ``cpu`` or ``cuda``.
        seed: seed of the view order, crops and source choice.
        depth_line: how to read the cam files' depth line (``interval`` or ``min_max``).
        loss: weights of the loss terms.
    """

    scene: str = ""
    out: str = "outputs/finetune/finetuned.pt"
    checkpoint: str | None = None
    steps: int = 120
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    num_views: int = ReconstructConfig().num_views
    source_pool: int = ReconstructConfig().num_views - 1
    max_dim: int | None = 640
    crop: tuple[int, int] | None = (320, 256)
    eval_views: int = 6
    device: str = "auto"
    seed: int = 0
    depth_line: str = "interval"
    loss: SelfSupervisedConfig = field(default_factory=SelfSupervisedConfig)

    def __post_init__(self) -> None:
        if isinstance(self.loss, dict):
            self.loss = SelfSupervisedConfig(**self.loss)
        if self.crop is not None:
            self.crop = (int(self.crop[0]), int(self.crop[1]))
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.num_views < 2:
            raise ValueError(f"num_views must be >= 2 (a reference and a source), got {self.num_views}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.crop is not None and min(self.crop) < CascadeMVSNet.SIZE_MULTIPLE:
            raise ValueError(f"crop must be at least {CascadeMVSNet.SIZE_MULTIPLE} pixels each way, got {self.crop}")


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def sidecar_paths(out: str | Path) -> tuple[Path, Path]:
    """(config YAML, JSON log) written beside the checkpoint ``out``."""
    out = Path(out)
    return out.with_suffix(".finetune.yaml"), out.with_suffix(".finetune.json")


class SceneViews:
    """Every view of a scene resized once to the fine-tuning resolution, kept in memory.

    Args:
        scene: the scene.
        width, height: processing size (multiples of the network's size multiple).
    """

    def __init__(self, scene: Scene, width: int, height: int):
        self.scene = scene
        self.width, self.height = width, height
        self.images: dict[int, np.ndarray] = {}  # view -> (H, W, 3) uint8
        self.cameras: dict[int, Camera] = {}
        for view in scene.view_ids:
            image, camera, _ = resize_view(scene.image(view), scene.views[view].camera, width, height)
            self.images[view], self.cameras[view] = image, camera
        self.references = [v for v in scene.view_ids if scene.source_views(v)]
        if not self.references:
            raise MVSInputError("no view has source views in pair.txt; nothing to fine-tune on",
                                scene.root / "pair.txt")

    def sources(self, reference: int, count: int, pool: int, rng: np.random.Generator | None) -> list[int]:
        """``count`` source views: the best ones, or drawn from the best ``pool`` with ``rng``
        (pair.txt sources scored far below the best left out, as ``mvs reconstruct`` does)."""
        candidates = self.scene.source_views(reference, min_relative_score=ReconstructConfig().min_source_score)
        if rng is not None and pool > count and len(candidates) > count:
            chosen = rng.choice(candidates[:pool], size=count, replace=False)
            candidates = [int(v) for v in chosen]
        candidates = candidates[:count]
        while len(candidates) < count:  # fewer sources than asked: repeat, keeping one shape
            candidates = candidates + candidates[: count - len(candidates)]
        return candidates

    def _tensor(self, views: list[int], device: torch.device) -> torch.Tensor:
        """(1, N, 3, H, W) float in [0, 1]."""
        stack = np.stack([self.images[v] for v in views])  # (N, H, W, 3)
        return torch.from_numpy(stack).to(device).permute(0, 3, 1, 2).float().div(255.0)[None]

    def sample(self, reference: int, sources: list[int], crop: tuple[int, int, int, int] | None,
               device: torch.device) -> dict[str, torch.Tensor]:
        """Network input and loss input for one reference view.

        Args:
            crop: (x0, y0, width, height) window of the resized images, or None.

        Returns:
            dict with ``images`` (1, V, 3, h, w), ``intrinsics`` (1, V, 3, 3), ``extrinsics``
            (1, V, 4, 4) for the network (cropped); ``source_images`` (1, S, 3, H, W),
            ``source_intrinsics`` (1, S, 3, 3) whole sources for the photometric loss;
            ``depth_min``, ``depth_max`` (1,) the reference's range (scene units).
        """
        views = [reference] + sources
        full = self._tensor(views, device)  # (1, V, 3, H, W)
        cameras = [self.cameras[v] for v in views]
        K_full, E = stack_cameras(cameras, device)
        if crop is not None:
            x0, y0, w, h = crop
            images = full[..., y0 : y0 + h, x0 : x0 + w]
            K, _ = stack_cameras([c.cropped(x0, y0, w, h) for c in cameras], device)
        else:
            images, K = full, K_full
        camera = cameras[0]
        return {
            "images": images.contiguous(),
            "intrinsics": K[None],
            "extrinsics": E[None],
            "source_images": full[:, 1:],
            "source_intrinsics": K_full[None, 1:],
            "depth_min": torch.tensor([camera.depth_min], device=device),
            "depth_max": torch.tensor([camera.depth_max], device=device),
        }


def _forward(model: torch.nn.Module, sample: dict) -> dict:
    return model(sample["images"], sample["intrinsics"], sample["extrinsics"],
                 sample["depth_min"], sample["depth_max"])


def _loss(outputs: dict, prior: dict | None, sample: dict, model: CascadeMVSNet,
          config: SelfSupervisedConfig) -> tuple[torch.Tensor, dict[str, float]]:
    return self_supervised_loss(
        outputs, prior,
        sample["images"][:, 0], sample["intrinsics"][:, 0], sample["extrinsics"][:, 0],
        sample["source_images"], sample["source_intrinsics"], sample["extrinsics"][:, 1:],
        sample["depth_min"], sample["depth_max"], model.config, config,
    )


def _centre_crop(width: int, height: int, crop: tuple[int, int] | None) -> tuple[int, int, int, int] | None:
    if crop is None:
        return None
    w, h = crop
    return (width - w) // 2, (height - h) // 2, w, h


@torch.no_grad()
def scene_loss(model: CascadeMVSNet, prior_model: CascadeMVSNet | None, views: SceneViews,
               references: list[int], config: FinetuneConfig, device: torch.device) -> dict[str, float]:
    """Mean self-supervised loss terms over ``references`` (best sources, centre crop).

    ``prior_model`` None means ``model`` *is* the original network: the prior term is
    then 0 by definition and the second forward pass is skipped.
    """
    crop = _centre_crop(views.width, views.height, _crop_size(config, views))
    sums: dict[str, float] = {}
    for reference in references:
        sources = views.sources(reference, config.num_views - 1, 0, None)
        sample = views.sample(reference, sources, crop, device)
        outputs = _forward(model, sample)
        prior = _forward(prior_model, sample) if prior_model is not None else outputs
        _, terms = _loss(outputs, prior, sample, model, config.loss)
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + value
    return {key: value / max(1, len(references)) for key, value in sums.items()}


def _crop_size(config: FinetuneConfig, views: SceneViews) -> tuple[int, int] | None:
    """The crop, shrunk to the image and to multiples of the network's size multiple."""
    if config.crop is None:
        return None
    m = CascadeMVSNet.SIZE_MULTIPLE
    w = max(m, min(config.crop[0], views.width) // m * m)
    h = max(m, min(config.crop[1], views.height) // m * m)
    return None if (w, h) == (views.width, views.height) else (w, h)


def _schedule(step: int, steps: int) -> float:
    """LR factor: cosine from 1 to 0.1 over the run."""
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, step / max(1, steps))))


def finetune(config: FinetuneConfig, progress: bool = True) -> dict:
    """Fine-tune a checkpoint on ``config.scene`` and write ``config.out`` (+ sidecars).

    Returns:
        summary: ``out``, ``steps``, ``seconds``, ``processed_size``, ``crop``,
        ``loss_before`` / ``loss_after`` (mean terms over the evaluation views) and
        ``device``.
    """
    if not config.scene:
        raise MVSInputError("no scene given to fine-tune on")
    start = time.perf_counter()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    scene = load_scene(config.scene, config.depth_line)
    checkpoint = Path(config.checkpoint) if config.checkpoint else DEFAULT_CHECKPOINT
    model, payload = load_model(checkpoint, device)
    # eval(): BatchNorm keeps its running statistics (see the module docstring).
    model.eval()
    prior_model = copy.deepcopy(model).requires_grad_(False)

    width, height = fit_size(*scene.image_size, config.max_dim, CascadeMVSNet.SIZE_MULTIPLE)
    views = SceneViews(scene, width, height)
    crop_size = _crop_size(config, views)
    count = min(config.eval_views, len(views.references))
    eval_refs = [views.references[int(i)] for i in np.linspace(0, len(views.references) - 1, count).round()]
    eval_refs = list(dict.fromkeys(eval_refs))
    before = scene_loss(model, None, views, eval_refs, config, device)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _schedule(step, config.steps))
    log: list[dict] = []
    order: list[int] = []
    bar = tqdm(total=config.steps, desc=f"finetune {scene.name}", unit="step", disable=not progress)
    for step in range(config.steps):
        tick = time.perf_counter()
        if not order:  # every reference once per pass, in a fresh random order
            order = [views.references[i] for i in rng.permutation(len(views.references))]
        reference = order.pop()
        sources = views.sources(reference, config.num_views - 1, config.source_pool, rng)
        crop = None
        if crop_size is not None:
            x0 = int(rng.integers(0, width - crop_size[0] + 1))
            y0 = int(rng.integers(0, height - crop_size[1] + 1))
            crop = (x0, y0, *crop_size)
        sample = views.sample(reference, sources, crop, device)
        with torch.no_grad():
            prior = _forward(prior_model, sample)
        outputs = _forward(model, sample)
        loss, terms = _loss(outputs, prior, sample, model, config.loss)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        entry = {"step": step, "view": reference, **{k: round(v, 6) for k, v in terms.items()},
                 "lr": optimizer.param_groups[0]["lr"], "seconds": round(time.perf_counter() - tick, 3)}
        log.append(entry)
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss']:.4f}", photo=f"{terms['photometric']:.4f}",
                        prior=f"{terms['prior']:.3f}")
    bar.close()

    after = scene_loss(model, prior_model, views, eval_refs, config, device)
    seconds = time.perf_counter() - start
    base_meta = {k: v for k, v in payload.get("meta", {}).items() if k != "train_config"}
    finetuned_on = {
        "scene": str(scene.root.resolve()),
        "scene_name": scene.name,
        "views": len(views.references),
        "processed_size": [width, height],
        "crop": list(crop_size) if crop_size else None,
        "steps": config.steps,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = {
        "finetuned_on": finetuned_on,
        "finetuned_from": str(checkpoint.resolve()),
        "finetune_config": to_dict(config),
        "self_supervised_loss": {"before": before, "after": after},
        "base_meta": base_meta,
    }
    out = Path(config.out)
    save_checkpoint(out, model, model.config, meta=meta)
    config_path, log_path = sidecar_paths(out)
    save_config(config, config_path)
    summary = {
        "out": str(out),
        "device": str(device),
        "steps": config.steps,
        "seconds": seconds,
        "processed_size": [width, height],
        "crop": list(crop_size) if crop_size else None,
        "eval_views": eval_refs,
        "loss_before": before,
        "loss_after": after,
    }
    log_path.write_text(json.dumps({**summary, "finetuned_on": finetuned_on, "log": log}, indent=1))
    return summary


# ----------------------------------------------------------------------------- command line
# Shared by `mvs finetune` (mvs/cli.py) and the Ray job (jobs/finetune.py), so both take
# exactly the same options.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``mvs finetune`` (scene, --out, and the common settings)."""
    d = FinetuneConfig()
    parser.add_argument("scene", help="scene folder (MVSNet test layout or BlendedMVS); no ground truth needed")
    parser.add_argument("--out", required=True, help="fine-tuned checkpoint to write (e.g. runs/scene.pt)")
    parser.add_argument("--steps", type=int, help=f"optimiser steps, one reference view each (default {d.steps})")
    parser.add_argument("--checkpoint", help="starting checkpoint (default: the one shipped with mvs)")
    parser.add_argument("--lr", type=float, help=f"Adam learning rate (default {d.lr:g})")
    parser.add_argument("--max-dim", type=int, help=f"longer image side used for fine-tuning (default {d.max_dim})")
    parser.add_argument("--crop", type=int, nargs=2, metavar=("W", "H"),
                        help=f"random crop fed to the network (default {d.crop[0]} {d.crop[1]})")
    parser.add_argument("--no-crop", action="store_true", help="feed whole (resized) images")
    parser.add_argument("--num-views", type=int, help=f"reference + sources per step (default {d.num_views})")
    parser.add_argument("--device", help="auto (cuda when available), cpu or cuda (default auto)")
    parser.add_argument("--seed", type=int, help="seed of view order and crops (default 0)")
    parser.add_argument("--depth-line", choices=["interval", "min_max"], help="how to read cam files' depth line")
    parser.add_argument("--config", help="YAML FinetuneConfig (a previous run's .finetune.yaml works)")
    parser.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                        help="other settings as dotted overrides, e.g. --set loss.prior_weight=0.05 eval_views=4")


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The FinetuneConfig that :func:`add_arguments`' options describe.

    Precedence: defaults < ``--config`` < dotted overrides < explicit flags.
    """
    # Numbers go through the YAML overrides (and the config's validation); paths and
    # names are set verbatim, so a folder called "123" or "null" stays a string.
    numbers = {"steps": args.steps, "lr": args.lr, "max_dim": args.max_dim,
               "num_views": args.num_views, "seed": args.seed}
    overrides = list(args.overrides) + [f"{k}={v}" for k, v in numbers.items() if v is not None]
    if args.no_crop:
        overrides.append("crop=null")
    elif args.crop is not None:
        overrides.append(f"crop=[{args.crop[0]},{args.crop[1]}]")
    config = load_config(FinetuneConfig, args.config, overrides)
    strings = {"scene": args.scene, "out": args.out, "checkpoint": args.checkpoint,
               "device": args.device, "depth_line": args.depth_line}
    for key, value in strings.items():
        if value is not None:
            setattr(config, key, str(value))
    return config
