"""Self-supervised losses: adapt the cascade to a scene that has no ground-truth depth.

Three terms, each computed at every cascade stage (the stage's depth map against the
images area-averaged to the stage's resolution) and combined with the model's
``stage_loss_weights`` (normalised to sum to 1):

* **photometric**: each source image is warped into the reference with the predicted
  depth (:func:`mvs.warping.warp_source_to_reference` with one hypothesis per pixel);
  the per-pixel error is ``alpha * (1 - SSIM) / 2 + (1 - alpha) * |I_ref - I_warped|``
  (channel mean, images in [0, 1]). The per-pixel *minimum* over sources is kept, so a
  pixel occluded in one source is judged by a source that sees it; pixels that project
  outside every source (or behind it) are left out.
* **smoothness**: edge-aware first-order smoothness (``kornia.losses.
  inverse_depth_smoothness_loss``) of the inverse depth divided by its per-view mean,
  so the term is the same whatever the scene's unit.
* **prior**: keeps the network near the original model's predictions where those were
  confident: ``confidence * smooth_l1((d - d_orig) / base_interval)`` for pixels whose
  original confidence is at least ``prior_confidence``, averaged over all pixels (a
  fixed "spring" per confident pixel). The base interval is the training loss's
  (:func:`mvs.models.hypotheses.base_interval`), so the term is unit-free too.

Every term is invariant to the scene's unit: scaling translations and depth ranges by
the same factor leaves the warps, the normalised inverse depth and the interval-measured
deviations unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from mvs.models.cascade import scale_intrinsics
from mvs.models.config import ModelConfig
from mvs.models.hypotheses import base_interval, to_param
from mvs.warping import warp_source_to_reference


@dataclass
class SelfSupervisedConfig:
    """Weights and settings of :func:`self_supervised_loss`.

    Attributes:
        photometric_weight: weight of the photometric term.
        ssim_alpha: share of the SSIM part in the photometric error (the rest is L1).
        ssim_window: Gaussian window (odd number of taps) of the SSIM.
        smoothness_weight: weight of the edge-aware smoothness term.
        prior_weight: weight of the term that keeps confident original predictions.
        prior_confidence: original confidence from which a pixel is held by the prior.
        prior_beta: smooth-L1 transition of the prior term, in base intervals.
        image_stage_weights: per-stage weights (coarse to fine) of the photometric and
            smoothness terms; None: the model's ``stage_loss_weights``. The prior term
            always uses the model's. Normalised to sum to 1.
    """

    photometric_weight: float = 1.0
    ssim_alpha: float = 0.85
    ssim_window: int = 5
    smoothness_weight: float = 0.1
    prior_weight: float = 0.02
    prior_confidence: float = 0.5
    prior_beta: float = 1.0
    image_stage_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.image_stage_weights is not None:
            self.image_stage_weights = tuple(float(w) for w in self.image_stage_weights)
            if min(self.image_stage_weights) < 0 or sum(self.image_stage_weights) <= 0:
                raise ValueError(f"image_stage_weights must be >= 0 with a positive sum, got {self.image_stage_weights}")
        if not 0.0 <= self.ssim_alpha <= 1.0:
            raise ValueError(f"ssim_alpha must be in [0, 1], got {self.ssim_alpha}")
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            raise ValueError(f"ssim_window must be odd and >= 3, got {self.ssim_window}")
        for name in ("photometric_weight", "smoothness_weight", "prior_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.prior_beta <= 0:
            raise ValueError(f"prior_beta must be > 0, got {self.prior_beta}")


def downsample_images(images: torch.Tensor, stride: int) -> torch.Tensor:
    """Area-average ``stride`` x ``stride`` blocks: (N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s)).

    The image is first padded on the right and bottom (replicate) to a multiple of the
    stride, exactly as the cascade pads its input, so output pixel (i, j) covers input
    pixels ``s*i .. s*i + s - 1``: the grid of a stage with stride s, whose intrinsics are
    :func:`mvs.models.cascade.scale_intrinsics` ``(K, 1/s, 1/s)``.
    """
    if stride == 1:
        return images
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % stride, (-width) % stride
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(images, stride)


def warp_images_with_depth(
    source_images: torch.Tensor,
    reference_intrinsics: torch.Tensor,
    reference_extrinsics: torch.Tensor,
    source_intrinsics: torch.Tensor,
    source_extrinsics: torch.Tensor,
    depth: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source images resampled at the reprojection of every reference pixel's depth.

    Args:
        source_images: (B, S, C, Hs, Ws).
        reference_intrinsics: (B, 3, 3) for the (H, W) grid of ``depth``.
        reference_extrinsics: (B, 4, 4) world-to-camera.
        source_intrinsics: (B, S, 3, 3) for the (Hs, Ws) source images.
        source_extrinsics: (B, S, 4, 4) world-to-camera.
        depth: (B, H, W) reference depth, scene units (differentiable).

    Returns:
        warped: (B, S, C, H, W) (border values where the point falls outside a source).
        valid: (B, S, H, W) bool, the point lies in front of the source and inside its image.
    """
    warped, valid = [], []
    for s in range(source_images.shape[1]):
        image, inside = warp_source_to_reference(
            source_images[:, s],
            reference_intrinsics,
            reference_extrinsics,
            source_intrinsics[:, s],
            source_extrinsics[:, s],
            depth[:, None],  # one hypothesis per pixel: (B, 1, H, W)
            padding_mode="border",  # finite gradients at the edge; masked by `valid` anyway
        )  # (B, C, 1, H, W), (B, 1, H, W)
        warped.append(image[:, :, 0])
        valid.append(inside[:, 0])
    return torch.stack(warped, 1), torch.stack(valid, 1)


def photometric_error(
    reference: torch.Tensor, warped: torch.Tensor, alpha: float = 0.85, window: int = 5
) -> torch.Tensor:
    """Per-pixel SSIM + L1 error of warped sources against the reference.

    Args:
        reference: (B, C, H, W) in [0, 1].
        warped: (B, S, C, H, W) in [0, 1].
        alpha: weight of the SSIM part; ``1 - alpha`` goes to the L1 part.
        window: SSIM Gaussian window size (odd).

    Returns:
        (B, S, H, W) error in [0, 1] (0 for identical images).
    """
    batch, sources, channels, height, width = warped.shape
    flat_ref = reference[:, None].expand_as(warped).reshape(-1, channels, height, width)
    flat_warped = warped.reshape(-1, channels, height, width)
    l1 = (flat_ref - flat_warped).abs().mean(1)  # (B*S, H, W)
    error = l1
    if alpha > 0:
        ssim = kornia.metrics.ssim(flat_ref, flat_warped, window, max_val=1.0)  # (B*S, C, H, W)
        dissimilarity = ((1.0 - ssim) / 2.0).clamp(0.0, 1.0).mean(1)  # (B*S, H, W)
        error = alpha * dissimilarity + (1.0 - alpha) * l1
    return error.reshape(batch, sources, height, width)


def min_photometric_loss(
    reference: torch.Tensor,
    warped: torch.Tensor,
    valid: torch.Tensor,
    alpha: float = 0.85,
    window: int = 5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean over covered pixels of the per-pixel minimum photometric error over sources.

    Args:
        reference: (B, C, H, W); warped: (B, S, C, H, W); valid: (B, S, H, W) bool.

    Returns:
        loss: scalar (0, still differentiable, when no pixel is covered).
        per_pixel: (B, H, W) minimum error (0 where no source covers the pixel).
        covered: (B, H, W) bool, at least one source sees the pixel.
    """
    error = photometric_error(reference, warped, alpha, window)  # (B, S, H, W)
    # An invalid source must never win the minimum: give it an error above any valid one.
    error = torch.where(valid, error, torch.full_like(error, 2.0))
    per_pixel = error.min(1).values  # (B, H, W)
    covered = valid.any(1)  # (B, H, W)
    per_pixel = torch.where(covered, per_pixel, torch.zeros_like(per_pixel))
    loss = per_pixel.sum() / covered.sum().clamp_min(1)
    return loss, per_pixel, covered


def edge_aware_smoothness(depth: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Edge-aware smoothness of the mean-normalised inverse depth (unit-free).

    Args:
        depth: (B, H, W) depth > 0, scene units.
        image: (B, C, H, W) the reference image in [0, 1] (its gradients relax the penalty
            at image edges, where depth edges are likely).

    Returns:
        scalar: mean of ``|d(idepth)| * exp(-|dI|)`` over both image axes, with
        ``idepth = (1 / depth) / mean(1 / depth)`` per view.
    """
    inverse = 1.0 / depth.clamp_min(torch.finfo(depth.dtype).tiny)
    inverse = inverse / inverse.mean(dim=(1, 2), keepdim=True).detach()
    return kornia.losses.inverse_depth_smoothness_loss(inverse[:, None], image)


def prior_loss(
    depth: torch.Tensor,
    prior_depth: torch.Tensor,
    prior_confidence: torch.Tensor,
    interval: torch.Tensor,
    confidence_threshold: float = 0.5,
    beta: float = 1.0,
    inverse_depth: bool = False,
) -> torch.Tensor:
    """Deviation from the original model's confident predictions, in base intervals.

    Args:
        depth: (B, H, W) current prediction, scene units.
        prior_depth: (B, H, W) the original model's prediction (no gradient).
        prior_confidence: (B, H, W) its confidence in [0, 1].
        interval: (B,) base interval (parameter units: depth, or -1/depth with
            ``inverse_depth``).
        confidence_threshold: pixels below this original confidence are free.
        beta: smooth-L1 transition, base intervals.

    Returns:
        scalar: mean over all pixels of ``confidence * smooth_l1(deviation)`` on the
        confident ones (0 elsewhere).
    """
    deviation = (
        to_param(depth, inverse_depth) - to_param(prior_depth, inverse_depth)
    ) / interval[:, None, None]  # (B, H, W) base intervals
    per_pixel = F.smooth_l1_loss(deviation, torch.zeros_like(deviation), reduction="none", beta=beta)
    weight = torch.where(
        prior_confidence >= confidence_threshold, prior_confidence, torch.zeros_like(prior_confidence)
    )
    return (weight * per_pixel).mean()


def _normalised(weights: tuple[float, ...], count: int) -> list[float]:
    """The first ``count`` weights divided by their sum."""
    chosen = [float(w) for w in weights[:count]]
    if len(chosen) != count:
        raise ValueError(f"need {count} stage weights, got {list(weights)}")
    return [w / sum(chosen) for w in chosen]


def self_supervised_loss(
    outputs: dict,
    prior: dict | None,
    reference_image: torch.Tensor,
    reference_intrinsics: torch.Tensor,
    reference_extrinsics: torch.Tensor,
    source_images: torch.Tensor,
    source_intrinsics: torch.Tensor,
    source_extrinsics: torch.Tensor,
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    model_config: ModelConfig,
    config: SelfSupervisedConfig | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Photometric + smoothness + prior loss over every cascade stage.

    The source images used for warping need not be the ones the network saw: a training
    crop of the reference can be checked against whole source images, so fewer of its
    pixels fall outside every source.

    Args:
        outputs: :meth:`CascadeMVSNet.forward` output (uses ``outputs["stages"]``).
        prior: the original model's output on the same input (``stages`` with ``depth``
            and ``confidence``), or None to leave the prior term out.
        reference_image: (B, 3, H, W) in [0, 1], the network's reference input.
        reference_intrinsics: (B, 3, 3) for (H, W); reference_extrinsics: (B, 4, 4).
        source_images: (B, S, 3, Hs, Ws) in [0, 1].
        source_intrinsics: (B, S, 3, 3) for (Hs, Ws); source_extrinsics: (B, S, 4, 4).
        depth_min, depth_max: (B,) the depth range given to the network, scene units.
        model_config: the network's config (stage weights, base-interval rule).
        config: loss weights (defaults if None).

    Returns:
        total: scalar tensor.
        terms: floats ``loss``, ``photometric``, ``smoothness``, ``prior`` (stage-weighted),
        ``photometric_final`` (last stage alone) and ``covered`` (share of last-stage pixels
        seen by at least one source).
    """
    config = config or SelfSupervisedConfig()
    stages = outputs["stages"]
    weights = _normalised(model_config.stage_loss_weights, len(stages))  # prior term
    image_weights = _normalised(config.image_stage_weights or model_config.stage_loss_weights, len(stages))
    interval = base_interval(
        depth_min.float(), depth_max.float(), model_config.hypotheses[0],
        model_config.interval_ratios[0], model_config.inverse_depth,
    )  # (B,)
    total = stages[0]["depth"].new_zeros(())
    sums = {"photometric": 0.0, "smoothness": 0.0, "prior": 0.0}
    terms: dict[str, float] = {}
    for k, stage in enumerate(stages):
        stride = stage["stride"]
        depth = stage["depth"].float()  # (B, h, w)
        height, width = depth.shape[-2:]
        ref = downsample_images(reference_image.float(), stride)[..., :height, :width]  # (B, 3, h, w)
        src = downsample_images(source_images.flatten(0, 1).float(), stride)
        src = src.reshape(*source_images.shape[:2], *src.shape[1:])  # (B, S, 3, hs, ws)
        warped, valid = warp_images_with_depth(
            src,
            scale_intrinsics(reference_intrinsics.float(), 1.0 / stride, 1.0 / stride),
            reference_extrinsics.float(),
            scale_intrinsics(source_intrinsics.float(), 1.0 / stride, 1.0 / stride),
            source_extrinsics.float(),
            depth,
        )
        photometric, _, covered = min_photometric_loss(ref, warped, valid, config.ssim_alpha, config.ssim_window)
        smoothness = edge_aware_smoothness(depth, ref)
        total = total + image_weights[k] * (
            config.photometric_weight * photometric + config.smoothness_weight * smoothness
        )
        prior_term = depth.new_zeros(())
        if prior is not None and config.prior_weight > 0:
            reference_stage = prior["stages"][k]
            prior_term = prior_loss(
                depth, reference_stage["depth"].float().detach(),
                reference_stage["confidence"].float().detach(), interval,
                config.prior_confidence, config.prior_beta, model_config.inverse_depth,
            )
            total = total + weights[k] * config.prior_weight * prior_term
        sums["photometric"] += image_weights[k] * float(photometric.detach())
        sums["smoothness"] += image_weights[k] * float(smoothness.detach())
        sums["prior"] += weights[k] * float(prior_term.detach())
        if k == len(stages) - 1:
            terms["photometric_final"] = float(photometric.detach())
            terms["covered"] = float(covered.float().mean())
    terms.update(sums)
    terms["loss"] = float(total.detach())
    return total, terms
