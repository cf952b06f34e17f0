"""Settings of the reconstruction service: model, limits, job expiry.

They arrive as the ``args`` of the application in the Serve config YAML
(``serve_config.yaml``), or from ``mvs serve`` flags, and are checked here once so a typo
fails at deployment rather than on the first request.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from mvs.inference import ReconstructConfig

MB = 1024 * 1024


@dataclass(frozen=True)
class ServiceConfig:
    """What the service accepts and how it runs. Sizes in MiB, times in seconds."""

    checkpoint: str | None = None  # None: the checkpoint shipped with mvs
    device: str = "auto"  # cpu, cuda, or auto (cuda when the replica was given a GPU)
    torch_threads: int = 0  # 0: leave torch's default (Ray sets it to the replica's num_cpus)
    tmp_dir: str | None = None  # parent of per-request temporary directories (None: system)
    max_upload_mb: float = 512.0  # request body; more is refused with 413
    max_uncompressed_mb: float = 2048.0  # scene files written from one upload (archives)
    max_archive_entries: int = 20000
    max_views: int = 64  # views per scene
    sync_max_views: int = 16  # larger scenes must use POST /v1/jobs
    max_image_pixels: int = 40_000_000  # width * height of each image
    default_max_dim: int = ReconstructConfig().max_dim or 1600  # longer side processed
    max_dim_limit: int = 2048  # the largest max_dim a request may ask for
    max_num_sources: int = 10
    job_ttl_s: float = 3600.0  # a finished job's result is kept this long
    max_jobs: int = 64  # jobs held at once (queued, running, or finished and not expired)
    chunk_mb: float = 4.0  # result transfer from a model replica, per message

    def __post_init__(self) -> None:
        problems = []
        for name in ("max_upload_mb", "max_uncompressed_mb", "job_ttl_s", "chunk_mb"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_archive_entries", "max_image_pixels", "max_jobs", "max_num_sources"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_views < 2:
            problems.append(f"max_views must be >= 2, got {self.max_views}")
        if not 2 <= self.sync_max_views <= self.max_views:
            problems.append(f"sync_max_views must be in [2, max_views={self.max_views}], got {self.sync_max_views}")
        if not 32 <= self.default_max_dim <= self.max_dim_limit:
            problems.append(
                f"default_max_dim must be in [32, max_dim_limit={self.max_dim_limit}], got {self.default_max_dim}"
            )
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            problems.append(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.torch_threads < 0:
            problems.append(f"torch_threads must be >= 0, got {self.torch_threads}")
        if problems:
            raise ValueError("invalid service settings: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> ServiceConfig:
        """Build from YAML ``args``; unknown keys are an error that lists the known ones."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown service setting(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def max_uncompressed_bytes(self) -> int:
        return int(self.max_uncompressed_mb * MB)

    @property
    def chunk_bytes(self) -> int:
        return max(64 * 1024, int(self.chunk_mb * MB))

    def limits(self) -> dict[str, Any]:
        """What a client may send (shown by GET /v1/health)."""
        return {
            "max_upload_mb": self.max_upload_mb,
            "max_uncompressed_mb": self.max_uncompressed_mb,
            "max_views": self.max_views,
            "sync_max_views": self.sync_max_views,
            "max_image_pixels": self.max_image_pixels,
            "max_dim_limit": self.max_dim_limit,
            "default_max_dim": self.default_max_dim,
            "max_num_sources": self.max_num_sources,
            "job_ttl_s": self.job_ttl_s,
            "max_jobs": self.max_jobs,
        }

