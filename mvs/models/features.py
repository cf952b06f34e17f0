"""FPN-style feature pyramid shared by all views.

A small encoder (8 channels at full resolution, 16 at 1/2, 32 at 1/4) followed by a
top-down path with lateral connections. Most capacity sits at 1/4 resolution; the
full-resolution layers are kept to 8 channels because they dominate the cost at 1600x1152.

Normalisation is BatchNorm: in ``eval()`` it is a fixed per-channel affine map, so batch
size 1 at inference is no problem; training batches hold ``B * V`` images.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def fold_batchnorm(
    conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``conv`` followed by ``bn`` in eval mode, as one convolution."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # (Cout,)
    shape = (-1,) + (1,) * (conv.weight.dim() - 1)
    weight = conv.weight * scale.reshape(shape)  # (Cout, Cin, k, ...)
    bias = bn.bias - bn.running_mean * scale  # (Cout,)
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    return weight, bias


class ConvBnReLU(nn.Module):
    """k x k Conv2d without bias, BatchNorm2d, ReLU.

    In eval mode the BatchNorm is folded into the convolution (one pass over the output
    instead of three), which matters at full resolution on CPU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, Cin, H, W) -> (N, Cout, H / stride, W / stride)."""
        if self.training:
            return F.relu(self.bn(self.conv(x)), inplace=True)
        weight, bias = fold_batchnorm(self.conv, self.bn)
        return F.relu_(F.conv2d(x, weight, bias, self.conv.stride, self.conv.padding))


def standardize_images(images: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image, per-channel zero-mean unit-variance images.

    The statistics come from every 4th pixel in each direction (16x cheaper, the same
    to a fraction of a percent on natural images).

    Args:
        images: (N, 3, H, W) float, any affine intensity scale ([0, 1], [0, 255], or already
            normalised): standardising makes the network independent of it.

    Returns:
        (N, 3, H, W) same dtype.
    """
    sample = images[:, :, ::4, ::4]  # (N, 3, H/4, W/4) view
    var, mean = torch.var_mean(sample, dim=(2, 3), keepdim=True)  # (N, 3, 1, 1) each
    scale = 1.0 / (var.sqrt() + eps)  # (N, 3, 1, 1)
    return torch.addcmul(-mean * scale, images, scale)  # one pass: (x - mean) * scale


class FeaturePyramid(nn.Module):
    """Feature maps at 1/4, 1/2 and 1/1 of the input, coarse first.

    Encoder: one 3x3 conv at full resolution (8 ch), two at 1/2 (16 ch), three at 1/4
    (32 ch). Top-down: the 1/4 map, projected to 16 channels, is upsampled and added to
    the 1/2 map; the full-resolution output is a 3x3 conv of the full-resolution encoder
    features plus the upsampled 1/2-resolution context projected to the same channels.
    Full resolution is the expensive part (5 views x 1600 x 1152), so it gets two thin
    convolutions and nothing else.

    Args:
        out_channels: channels of the output map of each stage, coarse to fine (1 to 3
            entries; stage k is at 1 / (4 / 2**k) of the input).

    Input (N, 3, H, W) with H and W multiples of 4 (standardised images); output a list
    with ``len(out_channels)`` maps (channels-last memory on CPU), entry k of shape
    (N, out_channels[k], H * 2**k / 4, W * 2**k / 4).
    """

    def __init__(self, out_channels: tuple[int, ...] = (16, 8, 8)):
        super().__init__()
        if not 1 <= len(out_channels) <= 3:
            raise ValueError(f"1 to 3 output scales, got {out_channels}")
        self.out_channels = tuple(out_channels)
        self.num_outputs = len(out_channels)
        self.enc0 = ConvBnReLU(3, 8)  # 1/1, 8 ch
        self.enc1 = nn.Sequential(ConvBnReLU(8, 16, 5, 2), ConvBnReLU(16, 16))  # 1/2, 16 ch
        self.enc2 = nn.Sequential(
            ConvBnReLU(16, 32, 5, 2), ConvBnReLU(32, 32), ConvBnReLU(32, 32)
        )  # 1/4, 32 ch
        self.out2 = nn.Conv2d(32, out_channels[0], 1, bias=False)
        if self.num_outputs >= 2:
            self.top_down1 = nn.Conv2d(32, 16, 1, bias=True)
            self.out1 = nn.Conv2d(16, out_channels[1], 3, padding=1, bias=False)
        if self.num_outputs >= 3:
            self.context0 = nn.Conv2d(16, out_channels[2], 1, bias=False)
            self.out0 = nn.Conv2d(8, out_channels[2], 3, padding=1, bias=True)
        self.to(memory_format=torch.channels_last)  # NHWC weights: oneDNN's fast path on CPU

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(N, 3, H, W) -> [(N, C0, H/4, W/4), (N, C1, H/2, W/2), (N, C2, H, W)][:stages]."""
        if images.device.type == "cpu":
            # oneDNN convolutions are 2-3x faster in NHWC on CPU.
            images = images.contiguous(memory_format=torch.channels_last)
        x0 = self.enc0(images)  # (N, 8, H, W)
        x1 = self.enc1(x0)  # (N, 16, H/2, W/2)
        x2 = self.enc2(x1)  # (N, 32, H/4, W/4)
        outputs = [self.out2(x2)]  # (N, C0, H/4, W/4)
        if self.num_outputs >= 2:
            inner1 = F.interpolate(self.top_down1(x2), size=x1.shape[-2:], mode="nearest").add_(
                x1
            )  # (N, 16, H/2, W/2)
            outputs.append(self.out1(inner1))  # (N, C1, H/2, W/2)
            if self.num_outputs >= 3:
                context = F.interpolate(
                    self.context0(inner1), size=x0.shape[-2:], mode="nearest"
                )  # (N, C2, H, W)
                outputs.append(self.out0(x0).add_(context))  # (N, C2, H, W)
        return outputs
