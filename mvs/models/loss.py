"""Training loss and depth metrics of the cascade.

Unit-free loss: every stage's error is divided by the sample's *base interval*
``(p(depth_max) - p(depth_min)) / (hypotheses[0] * interval_ratios[0])`` (the final
stage's hypothesis spacing with the default ratios; ``p`` is depth, or ``-1/depth`` with
``inverse_depth``), so a scene in millimetres and the same scene in metres give the same
loss, and the smooth-L1 transition (``smooth_l1_beta``, 1 by default) sits at one base
interval whatever the scene's scale. Each stage's term is the mean over its valid pixels,
and the stage terms are summed with ``stage_loss_weights``.

Ground truth is brought to a stage's resolution by nearest sampling at the stage's pixel
centres (input pixel ``s * i + s // 2`` for stride s), never averaging across depth
discontinuities. Valid ground truth is ``gt > 0`` (and finite) and ``mask``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mvs.models.config import ModelConfig
from mvs.models.hypotheses import base_interval, to_param


def downsample_nearest(
    image: torch.Tensor, stride: int, height: int, width: int, fill: float = 0.0
) -> torch.Tensor:
    """(B, H, W) -> (B, height, width) sampling pixel ``(s*i + s//2, s*j + s//2)``.

    Positions beyond the input (the cascade pads images) take ``fill``.
    """
    if stride == 1 and image.shape[-2:] == (height, width):
        return image
    need_h, need_w = height * stride, width * stride
    pad_h, pad_w = max(0, need_h - image.shape[-2]), max(0, need_w - image.shape[-1])
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=fill)
    offset = stride // 2
    return image[:, offset:need_h:stride, offset:need_w:stride][:, :height, :width]


def _valid(gt: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    valid = torch.isfinite(gt) & (gt > 0)
    if mask is not None:
        valid = valid & mask.bool()
    return valid


def _base_interval(config: ModelConfig, depth_min, depth_max) -> torch.Tensor:
    return base_interval(
        depth_min.float(),
        depth_max.float(),
        config.hypotheses[0],
        config.interval_ratios[0],
        config.inverse_depth,
    )  # (B,)


def cascade_loss(
    outputs: dict,
    depth_gt: torch.Tensor,
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    config: ModelConfig,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum over stages of the masked, interval-normalised smooth-L1 depth error.

    Args:
        outputs: :meth:`CascadeMVSNet.forward` output (uses ``outputs["stages"]``).
        depth_gt: (B, H, W) ground-truth depth at the input resolution, scene units;
            <= 0 or non-finite means unknown.
        depth_min, depth_max: (B,) the depth range given to the network.
        config: the network's config (hypotheses, ratios, stage weights, beta).
        mask: optional (B, H, W) bool, False to ignore a pixel.

    Returns:
        total: scalar tensor (0 with no valid pixel, still differentiable).
        terms: ``{"loss": float, "stage0": float, ...}`` per-stage unweighted terms.
    """
    interval = _base_interval(config, depth_min, depth_max)  # (B,)
    total = outputs["stages"][0]["depth"].new_zeros(())
    terms: dict[str, float] = {}
    for k, stage in enumerate(outputs["stages"]):
        pred = stage["depth"].float()  # (B, h, w)
        height, width = pred.shape[-2:]
        gt = downsample_nearest(depth_gt.float(), stage["stride"], height, width)  # (B, h, w)
        stage_mask = None
        if mask is not None:
            stage_mask = downsample_nearest(mask.float(), stage["stride"], height, width) > 0.5
        valid = _valid(gt, stage_mask)  # (B, h, w)
        safe_gt = torch.where(valid, gt, pred.detach())  # avoid 1/0 in inverse mode
        error = (
            to_param(pred, config.inverse_depth) - to_param(safe_gt, config.inverse_depth)
        ) / interval[:, None, None]  # (B, h, w), base intervals
        per_pixel = F.smooth_l1_loss(
            error, torch.zeros_like(error), reduction="none", beta=config.smooth_l1_beta
        )  # (B, h, w)
        count = valid.sum()
        term = (per_pixel * valid).sum() / count.clamp_min(1)
        total = total + config.stage_loss_weights[k] * term
        terms[f"stage{k}"] = float(term.detach())
    terms["loss"] = float(total.detach())
    return total, terms


@torch.no_grad()
def depth_metrics(
    depth: torch.Tensor,
    depth_gt: torch.Tensor,
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    config: ModelConfig,
    mask: torch.Tensor | None = None,
    thresholds: tuple[float, ...] = (1.0, 2.0, 4.0),
) -> dict[str, float]:
    """Depth accuracy over valid pixels, on batched tensors where they are (GPU included).

    Training's per-batch counterpart of :func:`mvs.evaluation.depth_metrics` (which scores
    saved depth maps): the same validity rule (GT > 0, inside ``mask``) and the same
    ``|error| < t`` fractions, plus errors measured in base intervals.

    Args:
        depth: (B, H, W) predicted depth, scene units.
        depth_gt: (B, H, W) ground truth (<= 0 or non-finite = unknown).
        depth_min, depth_max: (B,) the network's depth range (for the base interval).
        config: gives the base interval rule.
        mask: optional (B, H, W) bool.
        thresholds: error thresholds, both in scene units and in base intervals.

    Returns:
        ``mae`` (scene units), ``mae_interval`` (MAE in base intervals),
        ``acc_{t}`` fraction of valid pixels with |error| < t scene units,
        ``acc_{t}_interval`` with |error| < t base intervals (in ``p`` for inverse depth),
        ``valid_pixels`` count. NaN for everything but the count when nothing is valid.
    """
    valid = _valid(depth_gt, mask)  # (B, H, W)
    count = int(valid.sum())
    result: dict[str, float] = {"valid_pixels": float(count)}
    names = ["mae", "mae_interval"]
    names += [f"acc_{t:g}" for t in thresholds] + [f"acc_{t:g}_interval" for t in thresholds]
    if count == 0:
        return {**result, **dict.fromkeys(names, float("nan"))}
    interval = _base_interval(config, depth_min, depth_max)  # (B,)
    pred, gt = depth.float(), depth_gt.float()
    error = (pred - gt).abs()[valid]  # (N,) scene units
    safe_gt = torch.where(valid, gt, pred)
    rel = (
        (to_param(pred, config.inverse_depth) - to_param(safe_gt, config.inverse_depth)).abs()
        / interval[:, None, None]
    )[valid]  # (N,) base intervals
    result["mae"] = float(error.mean())
    result["mae_interval"] = float(rel.mean())
    for t in thresholds:
        result[f"acc_{t:g}"] = float((error < t).float().mean())
    for t in thresholds:
        result[f"acc_{t:g}_interval"] = float((rel < t).float().mean())
    return result
