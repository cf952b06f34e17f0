"""3D U-Net that turns a cost volume into per-hypothesis scores.

Layout (c = base channels, resolutions relative to the input volume):

    e0 = CBR(Cin -> c)                       1/1
    e1 = CBR(c -> 2c, stride 2), CBR(2c)     1/2
    e2 = CBR(2c -> 4c, stride 2), CBR(4c)    1/4
    d1 = up(CBR(4c -> 2c)(e2)) + e1, CBR(2c) 1/2
    score = conv1x1x1(e0 -> 1) + up(conv3x3x3(d1 -> 1))

The decoder fuses the two scales at the *score* level (one channel) rather than
upsampling a c-channel feature volume to full resolution: the full-resolution volume is
the expensive one (8 x 1152 x 1600 voxels at the last stage), and this keeps it to one
3x3x3 convolution in and a 1x1x1 projection out. Upsampling is trilinear to the skip's
exact size, so any D, H, W (odd included) works; the cascade pads images so sizes are
multiples of 16 anyway.

The network convolves over (H, W, D) rather than (D, H, W) (see ``forward``), and on CPU
the volume is in ``channels_last_3d`` layout, where oneDNN's 3D convolutions are several
times faster than in NCDHW.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mvs.models.features import fold_batchnorm


class ConvBnReLU3d(nn.Module):
    """3x3x3 Conv3d without bias, BatchNorm3d, ReLU (BatchNorm folded in eval mode)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Cin, X, Y, Z) -> (B, Cout, X / stride, Y / stride, Z / stride)."""
        if self.training:
            return F.relu(self.bn(self.conv(x)), inplace=True)
        weight, bias = fold_batchnorm(self.conv, self.bn)
        if x.device.type == "cpu":
            weight = weight.contiguous(memory_format=torch.channels_last_3d)
        return F.relu_(F.conv3d(x, weight, bias, self.conv.stride, self.conv.padding))


def _upsample(volume: torch.Tensor, size: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """(B, C, d, h, w) -> (B, C, *size) trilinear (pixel-centre aligned)."""
    if tuple(volume.shape[-3:]) == tuple(size):
        return volume
    return F.interpolate(volume, size=tuple(size), mode="trilinear", align_corners=False)


class CostRegularization(nn.Module):
    """Small 3D U-Net: (B, Cin, D, H, W) cost -> (B, D, H, W) scores (logits over D).

    Args:
        in_channels: Cin of the cost volume.
        channels: base width c (8 by default; 4c at the coarsest level).
    """

    def __init__(self, in_channels: int, channels: int = 8):
        super().__init__()
        c = channels
        self.enc0 = ConvBnReLU3d(in_channels, c)
        self.enc1 = nn.Sequential(ConvBnReLU3d(c, 2 * c, stride=2), ConvBnReLU3d(2 * c, 2 * c))
        self.enc2 = nn.Sequential(ConvBnReLU3d(2 * c, 4 * c, stride=2), ConvBnReLU3d(4 * c, 4 * c))
        self.up2 = ConvBnReLU3d(4 * c, 2 * c)
        self.dec1 = ConvBnReLU3d(2 * c, 2 * c)
        self.score0 = nn.Conv3d(c, 1, 1)  # applied as a matmul over channels (see forward)
        self.score1 = nn.Conv3d(2 * c, 1, 3, padding=1, bias=False)
        # channels_last_3d weights: what oneDNN wants for channels-last input on CPU.
        self.to(memory_format=torch.channels_last_3d)

    def forward(self, cost: torch.Tensor) -> torch.Tensor:
        """(B, Cin, D, H, W) -> (B, D, H, W)."""
        # Convolve over (H, W, D) instead of (D, H, W). The kernels are 3x3x3 with the same
        # stride/padding on every axis, so this is only a relabelling of the weights'
        # axes, but PyTorch's CPU backend picks oneDNN over its ~20x slower reference
        # kernel only when N*C*size(2)*size(3) > 20480, which a shallow last-stage volume
        # (e.g. 1 x 4 x 8 x 512) misses and (1 x 4 x 512 x 640) never does.
        volume = cost.permute(0, 1, 3, 4, 2)  # (B, Cin, H, W, D)
        if volume.device.type == "cpu":
            volume = volume.contiguous(memory_format=torch.channels_last_3d)
        else:
            volume = volume.contiguous()
        e0 = self.enc0(volume)  # (B, c, H, W, D)
        e1 = self.enc1(e0)  # (B, 2c, H/2, W/2, D/2)
        e2 = self.enc2(e1)  # (B, 4c, H/4, W/4, D/4)
        d1 = self.dec1(_upsample(self.up2(e2), e1.shape[-3:]) + e1)  # (B, 2c, H/2, W/2, D/2)
        coarse = _upsample(self.score1(d1), e0.shape[-3:])  # (B, 1, H, W, D)
        # 1x1x1 head as a matmul over the (innermost, channels-last) channel axis: several
        # times cheaper on CPU than a one-output-channel convolution.
        fine = torch.matmul(
            e0.permute(0, 2, 3, 4, 1), self.score0.weight.view(-1).to(e0.dtype)
        )  # (B, H, W, D)
        scores = fine + self.score0.bias.to(e0.dtype) + coarse[:, 0]  # (B, H, W, D)
        return scores.permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)
