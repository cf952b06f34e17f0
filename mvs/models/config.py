"""Configuration of the cascade cost-volume network.

The config is saved inside checkpoints as ``dataclasses.asdict(config)`` and rebuilt with
``ModelConfig(**d)``; YAML/JSON turn tuples into lists, so ``__post_init__`` normalises
every sequence field back to a tuple and validates the whole thing.

Depth-sampling rule (unit-free: everything derives from each sample's depth range):

* ``range = depth_max - depth_min`` (or, with ``inverse_depth``, ``1/depth_min -
  1/depth_max``: all spacings are then in inverse depth).
* ``base_interval = range / (hypotheses[0] * interval_ratios[0])``.
* Stage 0 spans ``[depth_min, depth_max]`` exactly with ``hypotheses[0]`` samples (spacing
  ``range / (hypotheses[0] - 1)``, about ``interval_ratios[0] * base_interval``).
* Stage k > 0 places ``hypotheses[k]`` samples ``interval_ratios[k] * base_interval`` apart,
  centred on the previous stage's (upsampled) depth. With the defaults the final spacing is
  a quarter of the first stage's: ``range / 192``, MVSNet's classic resolution.

Defaults are sized for the CPU budget (5 views at 1600x1152 in under 10 s on 2 cores;
about 6.4 s measured, see ``benchmarks/results/model_speed.json``). ``hypotheses=(48, 16,
8)`` (a stage-2 window of +-4 first-stage intervals instead of +-8) is about 20% faster.
Hypothesis counts do not change the weights' shapes, so a checkpoint loads with either
(the accuracy of such a switch is untested).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

AGGREGATIONS = ("groupwise", "variance")

# Resolution of each stage relative to the input image (stage k works at 1 / STRIDES[k]).
STAGE_STRIDES = (4, 2, 1)

_TUPLE_FIELDS = {
    "feature_channels": int,
    "hypotheses": int,
    "interval_ratios": float,
    "groups": int,
    "regularization_channels": int,
    "stage_loss_weights": float,
}


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`mvs.models.cascade.CascadeMVSNet`.

    Per-stage tuples have ``num_stages`` entries, coarse to fine.

    Attributes:
        num_stages: 1 to 3 stages at 1/4, 1/2 and 1/1 of the input resolution.
        feature_channels: matching-feature channels of each stage's feature map.
        hypotheses: depth hypotheses per pixel at each stage.
        interval_ratios: hypothesis spacing of each stage in units of the base interval
            (see the module docstring); the last one is the finest.
        groups: group-wise correlation groups per stage (must divide feature_channels).
        aggregation: ``"groupwise"`` (mean over sources of group-wise correlation with the
            reference) or ``"variance"`` (MVSNet's feature variance over all views).
        visibility_weights: predict a per-pixel weight in [0, 1] for each source view from
            its own matching volume and use it in the average over sources.
        inverse_depth: sample and regress in inverse depth (for unbounded outdoor scenes);
            spacings are then in inverse-depth units.
        regularization_channels: base channels of each stage's 3D U-Net.
        stage_loss_weights: weight of each stage's term in the training loss.
        smooth_l1_beta: transition point of the smooth-L1 loss, in base intervals.
    """

    num_stages: int = 3
    feature_channels: tuple[int, ...] = (16, 8, 8)
    hypotheses: tuple[int, ...] = (48, 32, 8)
    interval_ratios: tuple[float, ...] = (4.0, 2.0, 1.0)
    groups: tuple[int, ...] = (8, 4, 4)
    aggregation: str = "groupwise"
    visibility_weights: bool = False
    inverse_depth: bool = False
    regularization_channels: tuple[int, ...] = (8, 8, 4)
    stage_loss_weights: tuple[float, ...] = (0.5, 1.0, 2.0)
    smooth_l1_beta: float = 1.0

    def __post_init__(self) -> None:
        self.num_stages = int(self.num_stages)
        if not 1 <= self.num_stages <= len(STAGE_STRIDES):
            raise ValueError(f"num_stages must be 1..{len(STAGE_STRIDES)}, got {self.num_stages}")
        for name, kind in _TUPLE_FIELDS.items():
            value = getattr(self, name)
            if isinstance(value, (int, float)):
                value = [value] * self.num_stages
            value = tuple(kind(v) for v in value)
            if len(value) != self.num_stages:
                raise ValueError(
                    f"{name} needs one entry per stage ({self.num_stages}), got {list(value)}"
                )
            setattr(self, name, value)
        self.visibility_weights = bool(self.visibility_weights)
        self.inverse_depth = bool(self.inverse_depth)
        self.smooth_l1_beta = float(self.smooth_l1_beta)
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        for k in range(self.num_stages):
            if self.hypotheses[k] < 1 or (k == 0 and self.hypotheses[0] < 2):
                raise ValueError(f"stage {k} needs more depth hypotheses: {self.hypotheses}")
            if self.interval_ratios[k] <= 0:
                raise ValueError(f"interval_ratios must be positive: {self.interval_ratios}")
            if self.groups[k] < 1 or self.feature_channels[k] % self.groups[k]:
                raise ValueError(
                    f"stage {k}: groups ({self.groups[k]}) must divide feature_channels "
                    f"({self.feature_channels[k]})"
                )
            if self.regularization_channels[k] < 1:
                raise ValueError(
                    f"regularization_channels must be >= 1: {self.regularization_channels}"
                )
        if self.smooth_l1_beta <= 0:
            raise ValueError(f"smooth_l1_beta must be positive, got {self.smooth_l1_beta}")

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Downsampling factor of each stage w.r.t. the input image."""
        return STAGE_STRIDES[: self.num_stages]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples as lists) suitable for JSON/YAML and checkpoints."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Rebuild from :meth:`to_dict` / ``asdict`` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**d)
