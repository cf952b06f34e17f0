"""Plane-sweep cost volume: warp source features into the reference and aggregate them.

Sources are accumulated one at a time, so memory does not grow with the number of views.
Out-of-view samples (``valid == False``) get weight 0 in the average over sources; a
pixel and depth seen by no source gets a zero cost (finite).

Warping and correlation run in float32 with autocast disabled: pixel coordinates of a
1600-pixel-wide image cannot be represented in float16.

CPU inference (no autograd) works on bands of reference rows small enough for the
warped features to stay in a core's cache, each band going through every source before
the next. Bands are shared out to ``torch.get_num_threads()`` Python worker threads, each
running single-threaded PyTorch ops: a few hundred small ops per stage would otherwise
each be an OpenMP fork/join across all cores, which is fine on an idle machine and
disastrous (10x slower) when another process competes for the cores.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from mvs.parallel import run_bands
from mvs.warping import projection_factors, sample_source

# Below this total source weight a pixel counts as seen by no source.
_MIN_WEIGHT = 1e-6


def group_correlation(
    reference: torch.Tensor, warped: torch.Tensor, groups: int, inplace: bool = False
) -> torch.Tensor:
    """Group-wise correlation: mean over each group's channels of reference * warped.

    Args:
        reference: (B, C, H, W) reference features.
        warped: (B, C, D, H, W) source features warped to the reference.
        groups: G, divides C.
        inplace: allowed to overwrite ``warped`` (saves memory; only without autograd).

    Returns:
        (B, G, D, H, W).
    """
    batch, channels, num_depths, height, width = warped.shape
    per_group = channels // groups
    if per_group == 1:
        return warped.mul_(reference[:, :, None]) if inplace else warped * reference[:, :, None]
    # Strided channel slices: accumulate the products of the k-th channel of every group
    # (no (B, C, D, H, W) product and no reduction kernel).
    w = warped.view(batch, groups, per_group, num_depths, height, width)
    r = reference.view(batch, groups, per_group, 1, height, width)
    out = torch.mul(w[:, :, 0], r[:, :, 0])  # (B, G, D, H, W)
    for k in range(1, per_group):
        out = (
            out.addcmul_(w[:, :, k], r[:, :, k]) if inplace else out.addcmul(w[:, :, k], r[:, :, k])
        )
    return out.mul_(1.0 / per_group) if inplace else out * (1.0 / per_group)


class VisibilityNet(nn.Module):
    """Per-pixel weight in [0, 1] of one source view, from its own matching volume.

    Following the pair-wise visibility idea of PVSNet / Vis-MVSNet: a source whose
    similarity along the depth axis is peaked is likely to see the pixel; a flat or
    mostly-invalid profile is likely occluded or out of view. The similarity volume is
    reduced to one logit per hypothesis (1x1x1 convolution), turned into a distribution
    over depth, summarised by its normalised entropy, its peak probability and the
    fraction of valid hypotheses, and a tiny 2D CNN maps these three maps to a weight.
    """

    def __init__(self, groups: int, hidden: int = 8):
        super().__init__()
        # A 1x1x1 convolution G -> 1, written as a weighted sum (PyTorch's CPU Conv3d
        # falls back to a slow kernel for shallow volumes).
        self.logit_weight = nn.Parameter(torch.full((groups,), 1.0 / groups))
        self.logit_bias = nn.Parameter(torch.zeros(()))
        self.net = nn.Sequential(
            nn.Conv2d(3, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1),
        )

    def forward(self, similarity: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, G, D, H, W) similarity, (B, D, H, W) bool valid -> (B, H, W) weight in [0, 1]."""
        num_depths = similarity.shape[2]
        logits = torch.einsum("bgdhw,g->bdhw", similarity.float(), self.logit_weight.float())
        logits = logits + self.logit_bias.float()  # (B, D, H, W)
        logits = logits.masked_fill(~valid, -1e4)
        prob = torch.softmax(logits, dim=1)  # (B, D, H, W)
        entropy = -(prob * torch.log(prob.clamp_min(1e-12))).sum(1)  # (B, H, W)
        entropy = entropy / math.log(max(num_depths, 2))
        peak = prob.amax(1)  # (B, H, W)
        coverage = valid.float().mean(1)  # (B, H, W)
        summary = torch.stack([entropy, peak, coverage], dim=1)  # (B, 3, H, W)
        return torch.sigmoid(self.net(summary).float())[:, 0]  # (B, H, W)


class CostVolume(nn.Module):
    """Warp every source view into the reference and aggregate them into one volume.

    Args:
        channels: C, feature channels.
        groups: G, correlation groups (also used by the visibility net).
        aggregation: ``"groupwise"`` -> (B, G, D, H, W) weighted mean over sources of the
            group-wise correlation with the reference; ``"variance"`` -> (B, C, D, H, W)
            weighted variance over the reference (weight 1) and the sources.
        visibility: predict per-source pixel weights with :class:`VisibilityNet`.
        band_bytes: CPU inference warps bands of rows whose warped features take about
            this many bytes (see the module docstring).
    """

    def __init__(
        self,
        channels: int,
        groups: int,
        aggregation: str = "groupwise",
        visibility: bool = False,
        band_bytes: int = 2 << 20,
    ):
        super().__init__()
        if aggregation not in ("groupwise", "variance"):
            raise ValueError(f"unknown aggregation {aggregation!r}")
        if channels % groups:
            raise ValueError(f"groups ({groups}) must divide channels ({channels})")
        self.channels, self.groups, self.aggregation = channels, groups, aggregation
        self.visibility = VisibilityNet(groups) if visibility else None
        self.band_bytes = band_bytes

    @property
    def out_channels(self) -> int:
        return self.groups if self.aggregation == "groupwise" else self.channels

    def forward(
        self,
        reference_features: torch.Tensor,
        source_features: torch.Tensor,
        reference_intrinsics: torch.Tensor,
        reference_extrinsics: torch.Tensor,
        source_intrinsics: torch.Tensor,
        source_extrinsics: torch.Tensor,
        depth_hypotheses: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Build the cost volume.

        Args:
            reference_features: (B, C, H, W).
            source_features: (B, S, C, Hs, Ws), S >= 1 source views.
            reference_intrinsics: (B, 3, 3) for the (H, W) feature grid.
            reference_extrinsics: (B, 4, 4) world-to-camera.
            source_intrinsics: (B, S, 3, 3) for the (Hs, Ws) feature grid.
            source_extrinsics: (B, S, 4, 4).
            depth_hypotheses: (B, D, H, W) scene units.

        Returns:
            cost: (B, out_channels, D, H, W) float32.
            visibility: (B, S, H, W) per-source weights in [0, 1], or None without the net.
        """
        with torch.autocast(reference_features.device.type, enabled=False):
            reference = reference_features.float().contiguous()  # (B, C, H, W)
            # One (B, C, Hs, Ws) map per source; channels-last on CPU, where grid_sample then
            # reads all channels of a corner from one cache line (3x faster when
            # neighbouring pixels sample far apart).
            memory_format = (
                torch.channels_last if reference.device.type == "cpu" else torch.contiguous_format
            )
            sources = [
                source_features[:, s].float().contiguous(memory_format=memory_format)
                for s in range(source_features.shape[1])
            ]
            hypotheses = depth_hypotheses.float()  # (B, D, H, W)
            # Per source: columns (B, 3, W), rows (B, 3, H), offset (B, 3, 1, 1).
            factors = [
                projection_factors(
                    reference_intrinsics,
                    reference_extrinsics,
                    source_intrinsics[:, s],
                    source_extrinsics[:, s],
                    reference.shape[-2],
                    reference.shape[-1],
                    source.shape[-2],
                    source.shape[-1],
                )
                for s, source in enumerate(sources)
            ]
            if torch.is_grad_enabled():
                return self._forward_autograd(reference, sources, factors, hypotheses)
            return self._forward_inplace(reference, sources, factors, hypotheses)

    # ------------------------------------------------------------------ no autograd
    def _bands(self, num_depths: int, height: int, width: int, device: torch.device):
        """[(y0, y1)] row bands covering the reference grid."""
        if device.type != "cpu":
            return [(0, height)]
        rows = max(1, self.band_bytes // (4 * self.channels * num_depths * width))
        return [(y0, min(height, y0 + rows)) for y0 in range(0, height, rows)]

    @staticmethod
    def _warp_band(source, factors, hypotheses, y0, y1):
        """Warp one source for reference rows y0:y1 -> (B, C, D, h, W), (B, D, h, W)."""
        columns, rows, offset = factors
        direction = columns[:, :, None, :] + rows[:, :, y0:y1, None]  # (B, 3, h, W)
        return sample_source(source, direction, offset, hypotheses[:, :, y0:y1])

    def _forward_inplace(self, reference, sources, factors, hypotheses):
        """No-autograd path: banded warping, in-place accumulation."""
        batch, num_sources = reference.shape[0], len(sources)
        _, num_depths, height, width = hypotheses.shape
        bands = self._bands(num_depths, height, width, reference.device)
        groupwise = self.aggregation == "groupwise"
        shape = (batch, self.out_channels, num_depths, height, width)
        cost = reference.new_zeros(shape)  # weighted sum of correlations or of features
        cost_sq = None if groupwise else reference.new_zeros(shape)  # of squared features
        weight_sum = reference.new_zeros(batch, 1, num_depths, height, width)

        if self.visibility is None:

            def accumulate_band(y0: int, y1: int) -> None:
                for s in range(num_sources):
                    warped, valid = self._warp_band(sources[s], factors[s], hypotheses, y0, y1)
                    self._accumulate(
                        cost, cost_sq, weight_sum, y0, y1, reference, warped, valid[:, None]
                    )

            run_bands(accumulate_band, bands)
            return self._finish(cost, cost_sq, weight_sum, reference), None

        # Visibility needs a source's whole similarity volume first (its 2D net looks at
        # neighbouring pixels), so sources are done one after the other.
        visibilities = []
        for s in range(num_sources):
            similarity = reference.new_empty(batch, self.groups, num_depths, height, width)
            valid = torch.empty(
                batch, num_depths, height, width, dtype=torch.bool, device=reference.device
            )

            def similarity_band(
                y0: int, y1: int, s: int = s, similarity=similarity, valid=valid
            ) -> None:
                warped, valid[:, :, y0:y1] = self._warp_band(
                    sources[s], factors[s], hypotheses, y0, y1
                )
                similarity[:, :, :, y0:y1] = group_correlation(
                    reference[:, :, y0:y1], warped, self.groups, inplace=True
                )

            run_bands(similarity_band, bands)
            vis = self.visibility(similarity, valid)  # (B, H, W)
            visibilities.append(vis)
            weight = valid[:, None].float().mul_(vis[:, None, None])  # (B, 1, D, H, W)
            if groupwise:
                weight_sum.add_(weight)
                cost.addcmul_(similarity, weight)
                continue
            del similarity

            def variance_band(y0: int, y1: int, s: int = s, weight=weight) -> None:
                warped, _ = self._warp_band(sources[s], factors[s], hypotheses, y0, y1)
                self._accumulate(
                    cost, cost_sq, weight_sum, y0, y1, reference, warped, weight[:, :, :, y0:y1]
                )

            run_bands(variance_band, bands)  # warps this source a second time
        visibility = torch.stack(visibilities, dim=1)  # (B, S, H, W)
        return self._finish(cost, cost_sq, weight_sum, reference), visibility

    def _accumulate(self, cost, cost_sq, weight_sum, y0, y1, reference, warped, weight) -> None:
        """Add one band of one source into the accumulators (rows y0:y1).

        ``weight`` is (B, 1, D, h, W): float visibility-times-validity weights, or the bool
        validity itself (warped features are already zero where invalid, so they need no
        multiplication then).
        """
        band = (slice(None), slice(None), slice(None), slice(y0, y1))
        weight_sum[band].add_(weight)
        if self.aggregation == "groupwise":
            term = group_correlation(reference[:, :, y0:y1], warped, self.groups, inplace=True)
            if weight.dtype == torch.bool:
                cost[band].add_(term)
            else:
                cost[band].addcmul_(term, weight)
        elif weight.dtype == torch.bool:
            cost[band].add_(warped)
            cost_sq[band].add_(warped.square_())
        else:
            cost[band].addcmul_(warped, weight)
            cost_sq[band].addcmul_(warped.square_(), weight)

    def _finish(self, cost, cost_sq, weight_sum, reference) -> torch.Tensor:
        """Weighted sums -> weighted mean (groupwise) or variance, in place."""
        if self.aggregation == "groupwise":
            return cost.div_(weight_sum.clamp_min_(_MIN_WEIGHT))  # (B, G, D, H, W)
        count = weight_sum.add_(1.0)  # the reference counts with weight 1
        ref = reference[:, :, None]  # (B, C, 1, H, W)
        mean = cost.add_(ref).div_(count)  # (B, C, D, H, W)
        return cost_sq.add_(ref.square()).div_(count).sub_(mean.square_()).clamp_min_(0.0)

    # ------------------------------------------------------------------ autograd
    def _forward_autograd(self, reference, sources, factors, hypotheses):
        """Differentiable path (training): whole volumes, out-of-place accumulation."""
        weight_sum = cost = cost_sq = None
        visibilities = []
        height = hypotheses.shape[2]
        for s in range(len(sources)):
            warped, valid = self._warp_band(sources[s], factors[s], hypotheses, 0, height)
            weight = valid[:, None].float()  # (B, 1, D, H, W)
            similarity = None
            if self.aggregation == "groupwise" or self.visibility is not None:
                similarity = group_correlation(reference, warped, self.groups)  # (B, G, D, H, W)
            if self.visibility is not None:
                vis = self.visibility(similarity, valid)  # (B, H, W)
                visibilities.append(vis)
                weight = weight * vis[:, None, None]
            term = similarity if self.aggregation == "groupwise" else warped
            if cost is None:
                weight_sum, cost = weight, term * weight
                if self.aggregation == "variance":
                    cost_sq = term.square() * weight
            else:
                weight_sum = weight_sum + weight
                cost = cost + term * weight
                if self.aggregation == "variance":
                    cost_sq = cost_sq + term.square() * weight
        if self.aggregation == "groupwise":
            cost = cost / weight_sum.clamp_min(_MIN_WEIGHT)
        else:
            count = weight_sum + 1.0
            ref = reference[:, :, None]
            mean = (cost + ref) / count
            cost = ((cost_sq + ref.square()) / count - mean.square()).clamp_min(0.0)
        visibility = torch.stack(visibilities, dim=1) if visibilities else None
        return cost, visibility
