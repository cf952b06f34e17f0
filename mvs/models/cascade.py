"""Cascade cost-volume MVS network (coarse-to-fine plane sweep at 1/4, 1/2, 1/1 resolution).

Per stage: warp source features into the reference over per-pixel depth hypotheses,
aggregate them into a cost volume, regularise it with a small 3D U-Net, soft-argmin the
depth. The next stage samples a narrower range around the (upsampled) estimate.

Nothing depends on the scene's units: hypotheses derive from each sample's
``[depth_min, depth_max]`` and the geometry is projective, so expressing a scene in
millimetres or metres (translations and depth range scaled together) gives the same
depth up to that scale.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mvs.models.config import ModelConfig
from mvs.models.cost_volume import CostVolume
from mvs.models.depth_head import depth_regression
from mvs.models.features import FeaturePyramid, standardize_images
from mvs.models.hypotheses import base_interval, initial_hypotheses, refined_hypotheses, to_param
from mvs.models.regularization import CostRegularization


def scale_intrinsics(intrinsics: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics of the same camera for an image resized by (sx, sy).

    The convention of :meth:`mvs.cameras.Camera.resized`: pixel centres stay at integer
    coordinates, so ``fx' = fx * sx``, ``skew' = skew * sx``, ``cx' = (cx + 0.5) * sx - 0.5``
    and likewise for y. A feature map at stride s uses ``sx = sy = 1 / s``.

    Args:
        intrinsics: (..., 3, 3).

    Returns:
        (..., 3, 3) new tensor.
    """
    K = intrinsics.clone()
    K[..., 0, 0] = intrinsics[..., 0, 0] * sx
    K[..., 0, 1] = intrinsics[..., 0, 1] * sx
    K[..., 0, 2] = (intrinsics[..., 0, 2] + 0.5) * sx - 0.5
    K[..., 1, 1] = intrinsics[..., 1, 1] * sy
    K[..., 1, 2] = (intrinsics[..., 1, 2] + 0.5) * sy - 0.5
    return K


class CascadeMVSNet(nn.Module):
    """Three-stage cascade MVS network.

    Args:
        config: :class:`ModelConfig` (defaults if None).

    Input images may have any size: they are padded on the right and bottom (replicate)
    to a multiple of :attr:`SIZE_MULTIPLE`, which leaves intrinsics unchanged, and every
    output is cropped back.
    """

    #: Padded image sizes are multiples of this (the feature pyramid's stride 4 times the
    #: two stride-2 levels of the first stage's U-Net).
    SIZE_MULTIPLE = 16

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config = config if config is not None else ModelConfig()
        self.features = FeaturePyramid(config.feature_channels)
        self.cost_volumes = nn.ModuleList(
            CostVolume(c, g, config.aggregation, config.visibility_weights)
            for c, g in zip(config.feature_channels, config.groups, strict=True)
        )
        self.regularizers = nn.ModuleList(
            CostRegularization(cv.out_channels, channels)
            for cv, channels in zip(self.cost_volumes, config.regularization_channels, strict=True)
        )

    def forward(
        self,
        images: torch.Tensor,
        intrinsics: torch.Tensor,
        extrinsics: torch.Tensor,
        depth_min: torch.Tensor,
        depth_max: torch.Tensor,
        initial_depth: torch.Tensor | None = None,
        guide: tuple[torch.Tensor, torch.Tensor] | None = None,
        early_views: int | None = None,
        pyramid: list[torch.Tensor] | None = None,
    ) -> dict:
        """Estimate the reference view's depth.

        Args:
            images: (B, V, 3, H, W) float; view 0 is the reference, V >= 2. Any affine
                intensity scale ([0, 1], [0, 255] or mean/std normalised): each image is
                standardised per channel inside the network.
            intrinsics: (B, V, 3, 3) for the (H, W) images.
            extrinsics: (B, V, 4, 4) world-to-camera.
            depth_min, depth_max: (B,) reference depth range, scene units, 0 < min < max.
            initial_depth: (B, H, W) a depth estimate for these images, scene units — in
                practice this network's output for the same views at a lower image scale,
                upsampled (see :func:`mvs.inference.predict_view`). When given, only the
                last stage runs, sampling its hypotheses around this estimate, and
                ``stages`` holds that one stage.
            guide: (depth (B, H, W), confidence (B, H, W)) of this network for the same
                views at a lower image scale, upsampled. Every stage runs; the last one is
                centred on the guide's depth, except where the previous stage is more
                confident than the guide and nearer by more than the last stage's window:
                a part too thin for the lower scale, standing in front of what it saw,
                which the last stage could not reach from the guide. Not with
                ``initial_depth``.
            early_views: stages before the last use only the first ``early_views`` views
                (reference included, >= 2; default all V). Sources add less to the stages
                whose depth the guide mostly overrides than to the last one.
            pyramid: :meth:`image_features` of these images (flattened to (B*V, 3, H, W)),
                computed beforehand: each image is a source of several reference views, so
                reconstruction keeps its features instead of computing them for every view.
                None: computed here.

        Returns:
            dict with
              ``depth`` (B, H, W): final depth, scene units, inside [depth_min, depth_max];
              ``confidence`` (B, H, W) in [0, 1];
              ``stages``: list (coarse to fine) of dicts with ``depth`` (B, Hs, Ws),
              ``confidence`` (B, Hs, Ws), ``hypotheses`` (B, D, Hs, Ws), ``stride`` s (int,
              Hs = ceil(H / s)) and ``visibility`` (B, V-1, Hs, Ws) or None;
              with ``guide``, ``guided`` (B, H, W) bool: True where the last stage was
              centred on the guide rather than on the previous stage.
        """
        config = self.config
        batch, num_views, _, height, width = _check_inputs(
            images, intrinsics, extrinsics, depth_min, depth_max
        )
        dtype = torch.float32
        intrinsics, extrinsics = intrinsics.to(dtype), extrinsics.to(dtype)
        depth_min, depth_max = depth_min.to(dtype), depth_max.to(dtype)

        padded_h, padded_w = self._padded_size(height, width)
        if pyramid is None:
            pyramid = self.image_features(images.reshape(batch * num_views, 3, height, width))
        else:
            expected = [
                (batch * num_views, c, padded_h // s, padded_w // s)
                for c, s in zip(config.feature_channels, config.stage_strides, strict=True)
            ]
            if [tuple(level.shape) for level in pyramid] != expected:
                raise ValueError(
                    f"pyramid must be {expected} (image_features of the images), got "
                    f"{[tuple(level.shape) for level in pyramid]}"
                )
        # pyramid: [(B*V, C_k, Hp/s_k, Wp/s_k)]

        first_interval = base_interval(
            depth_min,
            depth_max,
            config.hypotheses[0],
            config.interval_ratios[0],
            config.inverse_depth,
        )  # (B,) parameter units
        stages = []
        previous = None  # (B, h, w) previous stage's depth at its padded resolution
        previous_confidence = None  # (B, h, w) and its confidence
        first_stage = 0
        if initial_depth is not None:
            if initial_depth.shape != (batch, height, width):
                raise ValueError(
                    f"initial_depth must be {(batch, height, width)}, got {tuple(initial_depth.shape)}"
                )
            first_stage = config.num_stages - 1
            previous = _pad_to(initial_depth.to(dtype), self.SIZE_MULTIPLE)  # (B, Hp, Wp)
        if guide is not None:
            if initial_depth is not None:
                raise ValueError("give initial_depth or guide, not both")
            if len(guide) != 2 or any(g.shape != (batch, height, width) for g in guide):
                raise ValueError(
                    f"guide must be (depth, confidence), each {(batch, height, width)}, got "
                    f"{[tuple(g.shape) for g in guide]}"
                )
        if early_views is not None and not 2 <= early_views <= num_views:
            raise ValueError(f"early_views must be in 2..{num_views}, got {early_views}")
        last_stage = config.num_stages - 1
        guided = None
        for k, stride in enumerate(config.stage_strides):
            if k < first_stage:
                continue
            stage_views = num_views if k == last_stage or early_views is None else early_views
            features = pyramid[k]
            _, channels, stage_h, stage_w = features.shape
            features = features.view(batch, num_views, channels, stage_h, stage_w)[:, :stage_views]
            stage_K = scale_intrinsics(intrinsics[:, :stage_views], 1.0 / stride, 1.0 / stride)  # (B, V', 3, 3)
            if k == last_stage and guide is not None:
                previous, guided = self._guided_seed(
                    guide, previous, previous_confidence, first_interval, stage_h, stage_w
                )  # (B, h, w) padded, (B, h, w) bool
            if previous is None:
                hypotheses = initial_hypotheses(
                    depth_min,
                    depth_max,
                    config.hypotheses[k],
                    stage_h,
                    stage_w,
                    config.inverse_depth,
                )  # (B, D, h, w)
            else:
                upsampled = _resize(previous, stage_h, stage_w)  # (B, h, w)
                hypotheses = refined_hypotheses(
                    upsampled,
                    depth_min,
                    depth_max,
                    config.hypotheses[k],
                    first_interval * config.interval_ratios[k],
                    config.inverse_depth,
                )  # (B, D, h, w)
            cost, visibility = self.cost_volumes[k](
                features[:, 0],
                features[:, 1:],
                stage_K[:, 0],
                extrinsics[:, 0],
                stage_K[:, 1:],
                extrinsics[:, 1:stage_views],
                hypotheses,
            )  # (B, Cc, D, h, w), (B, V-1, h, w) | None
            scores = self.regularizers[k](cost)  # (B, D, h, w)
            del cost
            result = depth_regression(scores, hypotheses, config.inverse_depth)
            previous = result["depth"].detach()  # (B, h, w)
            previous_confidence = result["confidence"].detach()  # (B, h, w)
            crop_h, crop_w = math.ceil(height / stride), math.ceil(width / stride)
            stages.append(
                {
                    "depth": result["depth"][:, :crop_h, :crop_w],
                    "confidence": result["confidence"][:, :crop_h, :crop_w],
                    "hypotheses": hypotheses[:, :, :crop_h, :crop_w],
                    "stride": stride,
                    "visibility": None
                    if visibility is None
                    else visibility[:, :, :crop_h, :crop_w],
                }
            )

        depth, confidence = stages[-1]["depth"], stages[-1]["confidence"]
        depth, confidence = _resize(depth, height, width), _resize(confidence, height, width)
        out = {"depth": depth, "confidence": confidence, "stages": stages}
        if guided is not None:
            out["guided"] = _resize(guided.float(), padded_h, padded_w)[:, :height, :width] > 0.5
        return out

    @classmethod
    def _padded_size(cls, height: int, width: int) -> tuple[int, int]:
        """(height, width) rounded up to multiples of :attr:`SIZE_MULTIPLE`."""
        m = cls.SIZE_MULTIPLE
        return math.ceil(height / m) * m, math.ceil(width / m) * m

    def image_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The feature pyramid of each image, as :meth:`forward` computes it.

        Each image's features depend on that image alone (BatchNorm is a fixed affine map
        in ``eval()``), so features computed once serve every reference view the image is
        a source of.

        Args:
            images: (N, 3, H, W) float, any affine intensity scale.

        Returns:
            Coarse to fine, one (N, C_k, Hp / s_k, Wp / s_k) map per stage (C_k
            ``config.feature_channels[k]``, s_k ``config.stage_strides[k]``), where (Hp, Wp)
            is (H, W) padded to a multiple of :attr:`SIZE_MULTIPLE`.
        """
        _, _, height, width = images.shape
        padded_h, padded_w = self._padded_size(height, width)
        flat = standardize_images(images.float())
        if (padded_h, padded_w) != (height, width):
            flat = F.pad(flat, (0, padded_w - width, 0, padded_h - height), mode="replicate")
        return self.features(flat)

    def _guided_seed(
        self,
        guide: tuple[torch.Tensor, torch.Tensor],
        previous: torch.Tensor | None,
        previous_confidence: torch.Tensor | None,
        first_interval: torch.Tensor,
        stage_h: int,
        stage_w: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Centre of the last stage's window at its (padded) grid, and where it is the guide's.

        Args:
            guide: (depth, confidence), each (B, H, W) at the unpadded input size.
            previous, previous_confidence: (B, h', w') the previous stage's outputs at its
                padded grid, or None (a one-stage network: the guide everywhere).
            first_interval: (B,) base interval, sampling-parameter units.

        Returns:
            (B, stage_h, stage_w) depth, (B, stage_h, stage_w) bool (True: from the guide).
        """
        config = self.config
        guide_depth, guide_confidence = (
            _resize(_pad_to(g.float(), self.SIZE_MULTIPLE), stage_h, stage_w) for g in guide
        )  # (B, h, w) each
        if previous is None:
            return guide_depth, torch.ones_like(guide_depth, dtype=torch.bool)
        previous, previous_confidence = (
            _resize(x, stage_h, stage_w) for x in (previous, previous_confidence)
        )  # (B, h, w) each
        # A margin of the whole window rather than half: on the held-out synthetic scene at
        # 1600x1200 it kept the thin parts and took fewer wrong near depths (README).
        window = (
            config.hypotheses[-1] * config.interval_ratios[-1] * first_interval
        )[:, None, None]  # (B, 1, 1) parameter units
        inverse = config.inverse_depth
        nearer = to_param(previous, inverse) < to_param(guide_depth, inverse) - window
        from_previous = nearer & (previous_confidence > guide_confidence)  # (B, h, w)
        return torch.where(from_previous, previous, guide_depth), ~from_previous


def _resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H', W') -> (B, height, width) bilinear (the identity at the same size)."""
    if x.shape[-2:] == (height, width):
        return x
    return F.interpolate(x[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """(B, H, W) -> (B, Hp, Wp) replicate-padded on the right and bottom to a multiple."""
    height, width = x.shape[-2:]
    padded_h, padded_w = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    if (padded_h, padded_w) == (height, width):
        return x
    return F.pad(x[:, None], (0, padded_w - width, 0, padded_h - height), mode="replicate")[:, 0]


def _check_inputs(images, intrinsics, extrinsics, depth_min, depth_max) -> tuple[int, ...]:
    if images.dim() != 5 or images.shape[2] != 3:
        raise ValueError(f"images must be (B, V, 3, H, W), got {tuple(images.shape)}")
    batch, num_views, _, height, width = images.shape
    if num_views < 2:
        raise ValueError(f"need a reference and at least one source view, got V={num_views}")
    if intrinsics.shape != (batch, num_views, 3, 3):
        raise ValueError(
            f"intrinsics must be {(batch, num_views, 3, 3)}, got {tuple(intrinsics.shape)}"
        )
    if extrinsics.shape != (batch, num_views, 4, 4):
        raise ValueError(
            f"extrinsics must be {(batch, num_views, 4, 4)}, got {tuple(extrinsics.shape)}"
        )
    if depth_min.shape != (batch,) or depth_max.shape != (batch,):
        raise ValueError(
            f"depth_min/depth_max must be ({batch},), got {tuple(depth_min.shape)}, "
            f"{tuple(depth_max.shape)}"
        )
    if not bool(((depth_min > 0) & (depth_max > depth_min)).all()):
        raise ValueError(
            f"depth ranges must satisfy 0 < depth_min < depth_max, got "
            f"{depth_min.tolist()} .. {depth_max.tolist()}"
        )
    return batch, num_views, 3, height, width
