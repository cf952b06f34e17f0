"""Options of a reconstruction request, parsed from form fields and checked against limits.

Form fields (all optional)::

    max_dim               longer image side processed, pixels (default: the service's)
    num_sources           source views per reference view (default as `mvs reconstruct`)
    confidence_threshold  fusion: photometric filter in [0, 1]
    reprojection_error    fusion: pixels
    relative_depth_error  fusion: |d' - d| / d
    min_consistent_views  fusion: sources a pixel must agree with
    consistency           fusion: fixed (default) or dynamic (D2HC-RMVSNet-style thresholds)
    normals               true/false: unit normals per point in the PLY
    source_view           true/false: each point's reference view id as a PLY vertex property
    output                ply (binary, default) or json (per-view statistics, depth previews)
    depth_line            interval (default) or min_max: how line 11 of the cam files reads
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mvs.fusion import CONSISTENCY_MODES, FusionConfig
from mvs.inference import ReconstructConfig
from mvs.io.cam import DepthLine
from mvs_serving.config import ServiceConfig
from mvs_serving.errors import unprocessable

OUTPUTS = ("ply", "json")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")
DEPTH_LINES = tuple(d.value for d in DepthLine)
_FUSION = FusionConfig()
_RECONSTRUCT = ReconstructConfig()


@dataclass(frozen=True)
class ReconstructOptions:
    """What one request asks for; every field already checked."""

    max_dim: int = _RECONSTRUCT.max_dim or 1600
    num_sources: int = _RECONSTRUCT.num_views - 1
    confidence_threshold: float = _FUSION.confidence_threshold
    reprojection_error: float = _FUSION.reprojection_error
    relative_depth_error: float = _FUSION.relative_depth_error
    min_consistent_views: int = _FUSION.min_consistent_views
    consistency: str = _FUSION.consistency
    normals: bool = _FUSION.normals
    source_view: bool = _FUSION.ply_source_view
    output: str = "ply"
    depth_line: str = DepthLine.INTERVAL.value

    def fusion_config(self) -> FusionConfig:
        return FusionConfig(
            confidence_threshold=self.confidence_threshold,
            reprojection_error=self.reprojection_error,
            relative_depth_error=self.relative_depth_error,
            min_consistent_views=self.min_consistent_views,
            consistency=self.consistency,
            normals=self.normals,
            ply_source_view=self.source_view,
        )

    def reconstruct_config(self, device: str) -> ReconstructConfig:
        """The core configuration: ``num_views`` counts the reference too."""
        return ReconstructConfig(
            max_dim=self.max_dim, num_views=self.num_sources + 1, device=device,
            previews=False, fuse=True, fusion=self.fusion_config(),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _integer(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise unprocessable("invalid_option", f"{name} must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise unprocessable("invalid_option", f"{name} must be in [{low}, {high}], got {value}")
        return value

    return parse


def _number(low: float, high: float, low_open: bool = False) -> Callable[[str, str], float]:
    def parse(name: str, text: str) -> float:
        try:
            value = float(text.strip())
        except ValueError:
            raise unprocessable("invalid_option", f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise unprocessable("invalid_option", f"{name} must be finite, got {text!r}")
        too_low = value <= low if low_open else value < low
        if too_low or value > high:
            bracket = "(" if low_open else "["
            raise unprocessable("invalid_option", f"{name} must be in {bracket}{low:g}, {high:g}], got {value:g}")
        return value

    return parse


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise unprocessable(
                "unsupported_option", f"{name}={text!r} is not supported; choose one of {', '.join(choices)}"
            )
        return value

    return parse


def _boolean(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise unprocessable("invalid_option", f"{name} must be true or false, got {text!r}")


def option_parsers(config: ServiceConfig) -> dict[str, Callable[[str, str], Any]]:
    """Form field name -> parser (name, text) -> value, with this service's limits."""
    return {
        "max_dim": _integer(32, config.max_dim_limit),
        "num_sources": _integer(1, config.max_num_sources),
        "confidence_threshold": _number(0.0, 1.0),
        "reprojection_error": _number(0.0, 100.0, low_open=True),
        "relative_depth_error": _number(0.0, 1.0, low_open=True),
        "min_consistent_views": _integer(0, config.max_num_sources),
        "consistency": _choice(CONSISTENCY_MODES),
        "normals": _boolean,
        "source_view": _boolean,
        "output": _choice(OUTPUTS),
        "depth_line": _choice(DEPTH_LINES),
    }


def parse_options(fields: list[tuple[str, str]], config: ServiceConfig) -> ReconstructOptions:
    """Options from (name, value) form fields.

    Raises:
        RequestError: 422 naming the field: unknown, given twice, or a value out of range.
    """
    parsers = option_parsers(config)
    values: dict[str, Any] = {"max_dim": config.default_max_dim}
    seen: set[str] = set()
    for name, text in fields:
        if name not in parsers:
            raise unprocessable(
                "unsupported_option",
                f"unknown option {name!r}; options are {', '.join(parsers)} "
                "(files go in archive, or images, cams and pair)",
            )
        if name in seen:
            raise unprocessable("invalid_option", f"option {name} is given more than once")
        seen.add(name)
        values[name] = parsers[name](name, text)
    return ReconstructOptions(**values)

