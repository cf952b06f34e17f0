"""Per-pixel depth hypotheses of each cascade stage.

Hypotheses are built in a *sampling parameter* ``p``: ``p = depth`` (uniform in depth) or
``p = -1 / depth`` (uniform in inverse depth; the minus sign keeps ``p`` increasing with
depth, so hypotheses are always sorted from near to far). Both scale with the scene
(``depth * s`` gives ``p * s`` or ``p / s``), and the spacings are fractions of the
per-sample parameter range, so nothing here depends on the scene's units.
"""

from __future__ import annotations

import torch


def to_param(depth: torch.Tensor, inverse: bool) -> torch.Tensor:
    """Sampling parameter of a depth (same shape): ``depth`` or ``-1 / depth``."""
    return -1.0 / depth if inverse else depth


def from_param(param: torch.Tensor, inverse: bool) -> torch.Tensor:
    """Depth of a sampling parameter (inverse of :func:`to_param`)."""
    return -1.0 / param if inverse else param


def param_range(
    depth_min: torch.Tensor, depth_max: torch.Tensor, inverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,), (B,): parameter values of depth_min and depth_max (low < high)."""
    return to_param(depth_min, inverse), to_param(depth_max, inverse)


def base_interval(
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    num_hypotheses: int,
    interval_ratio: float,
    inverse: bool = False,
) -> torch.Tensor:
    """(B,) base hypothesis spacing in parameter units (scene units if not ``inverse``).

    ``(p(depth_max) - p(depth_min)) / (num_hypotheses * interval_ratio)`` where
    ``num_hypotheses`` and ``interval_ratio`` are those of the first stage.
    """
    low, high = param_range(depth_min, depth_max, inverse)
    return (high - low) / (num_hypotheses * interval_ratio)


def initial_hypotheses(
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    num_hypotheses: int,
    height: int,
    width: int,
    inverse: bool = False,
) -> torch.Tensor:
    """Fronto-parallel planes covering ``[depth_min, depth_max]`` exactly.

    Args:
        depth_min, depth_max: (B,) per-sample depth range, scene units, 0 < min < max.
        num_hypotheses: D >= 2.
        height, width: size of the stage's grid.
        inverse: uniform in inverse depth instead of depth.

    Returns:
        (B, D, H, W) depths (scene units), ascending along D; an expanded view (no copy).
    """
    low, high = param_range(depth_min, depth_max, inverse)  # (B,), (B,)
    steps = torch.linspace(0.0, 1.0, num_hypotheses, device=low.device, dtype=low.dtype)  # (D,)
    param = low[:, None] + (high - low)[:, None] * steps[None]  # (B, D)
    depth = from_param(param, inverse)  # (B, D)
    # Make the end points exact (no round-off through 1/x).
    depth = torch.cat([depth_min[:, None], depth[:, 1:-1], depth_max[:, None]], dim=1)
    return depth[:, :, None, None].expand(-1, -1, height, width)


def refined_hypotheses(
    previous_depth: torch.Tensor,
    depth_min: torch.Tensor,
    depth_max: torch.Tensor,
    num_hypotheses: int,
    interval: torch.Tensor,
    inverse: bool = False,
) -> torch.Tensor:
    """Hypotheses centred on a previous estimate, kept inside the depth range.

    The D samples are ``interval`` apart in the sampling parameter, centred on
    ``p(previous_depth)``. Where that window would leave ``[depth_min, depth_max]`` it is
    shifted (not squeezed) back inside; if the window is wider than the whole range its
    spacing is reduced to ``range / (D - 1)``. All hypotheses are therefore > 0.

    Args:
        previous_depth: (B, H, W) depth at this stage's resolution (already upsampled).
        depth_min, depth_max: (B,) scene units.
        num_hypotheses: D >= 1.
        interval: (B,) spacing in parameter units (see :func:`base_interval`).
        inverse: parameter is ``-1/depth`` instead of depth.

    Returns:
        (B, D, H, W) depths (scene units), ascending along D.
    """
    low, high = param_range(depth_min, depth_max, inverse)  # (B,), (B,)
    span = high - low  # (B,)
    if num_hypotheses > 1:
        interval = torch.minimum(interval, span / (num_hypotheses - 1))  # (B,)
    half_width = interval * (num_hypotheses - 1) / 2  # (B,)
    inside = torch.minimum(
        torch.maximum(previous_depth, depth_min[:, None, None]), depth_max[:, None, None]
    )  # (B, H, W)
    centre = to_param(inside, inverse)  # (B, H, W)
    lowest = (high - 2 * half_width)[:, None, None]  # (B, 1, 1) last allowed window start
    start = torch.minimum(
        torch.maximum(centre - half_width[:, None, None], low[:, None, None]), lowest
    )  # (B, H, W)
    steps = torch.arange(num_hypotheses, device=centre.device, dtype=centre.dtype)  # (D,)
    param = start[:, None] + steps[None, :, None, None] * interval[:, None, None, None]
    # (B, D, H, W); round-off can step a hair past the range: clamp to it.
    param = torch.minimum(torch.maximum(param, low[:, None, None, None]), high[:, None, None, None])
    return from_param(param, inverse)
