"""Scores over depth hypotheses -> probability, depth (soft-argmin) and confidence."""

from __future__ import annotations

import torch

from mvs.models.hypotheses import from_param, to_param

# Number of neighbouring hypotheses whose probability mass is the confidence.
CONFIDENCE_WINDOW = 4


def window_confidence(
    probability: torch.Tensor, index: torch.Tensor, window: int = CONFIDENCE_WINDOW
) -> torch.Tensor:
    """Probability mass in ``window`` consecutive hypotheses around a fractional index.

    For ``window=4`` and an index e the window is hypotheses ``floor(e) - 1 .. floor(e) + 2``
    (the two on each side of e), shifted to stay within ``0 .. D-1``; with D <= window
    it is all hypotheses (confidence 1).

    Args:
        probability: (B, D, H, W), sums to 1 over D.
        index: (B, H, W) expected hypothesis index in [0, D-1].
        window: number of hypotheses summed.

    Returns:
        (B, H, W) in [0, 1].
    """
    num_depths = probability.shape[1]
    if num_depths <= window:
        return probability.sum(1).clamp(0.0, 1.0)
    # cumulative[:, j] = sum of probability[:, :j]  -> (B, D+1, H, W)
    cumulative = torch.cat(
        [torch.zeros_like(probability[:, :1]), torch.cumsum(probability, dim=1)], dim=1
    )
    start = (index.floor().long() - (window // 2 - 1)).clamp(0, num_depths - window)  # (B, H, W)
    upper = torch.gather(cumulative, 1, (start + window)[:, None])  # (B, 1, H, W)
    lower = torch.gather(cumulative, 1, start[:, None])  # (B, 1, H, W)
    return (upper - lower)[:, 0].clamp(0.0, 1.0)


def depth_regression(
    scores: torch.Tensor, hypotheses: torch.Tensor, inverse: bool = False
) -> dict[str, torch.Tensor]:
    """Softmax over hypotheses, expected depth and its confidence.

    Computed in float32 whatever the input dtype (softmax in float16 underflows).

    Args:
        scores: (B, D, H, W) logits (higher = more likely).
        hypotheses: (B, D, H, W) depths, scene units, ascending along D.
        inverse: take the expectation in inverse depth (``-1/depth``) rather than depth,
            matching hypotheses sampled uniformly in inverse depth.

    Returns:
        dict with ``probability`` (B, D, H, W), ``depth`` (B, H, W) scene units (inside
        the hypotheses' range), ``confidence`` (B, H, W) in [0, 1] (mass of the 4
        hypotheses around the estimate), ``index`` (B, H, W) expected fractional index.
    """
    probability = torch.softmax(scores.float(), dim=1)  # (B, D, H, W)
    param = to_param(hypotheses.float(), inverse)  # (B, D, H, W)
    expected = (probability * param).sum(1)  # (B, H, W)
    # Keep round-off from stepping outside the (ascending) hypotheses.
    expected = torch.minimum(torch.maximum(expected, param[:, 0]), param[:, -1])
    depth = from_param(expected, inverse)  # (B, H, W)
    steps = torch.arange(scores.shape[1], device=scores.device, dtype=probability.dtype)
    index = (probability * steps[None, :, None, None]).sum(1)  # (B, H, W)
    confidence = window_confidence(probability, index)  # (B, H, W)
    return {"probability": probability, "depth": depth, "confidence": confidence, "index": index}
