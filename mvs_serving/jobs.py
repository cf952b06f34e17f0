"""The asynchronous job table: status, progress, result files, expiry. No Ray here.

A job is created once its upload has been validated; the ingress runs it in the
background and records progress events. Results are files under the store's own folder
(not memory: a fused cloud can be large); a finished job, done or failed, expires
``ttl_s`` after it finished, when its folder is removed and its id answers 410 for a while.
Ids are random and unguessable: they are the only key to a result.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvs_serving.errors import RequestError

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
# Share of the progress bar given to the depth stage; fusion and transfer take the rest.
_DEPTH_SHARE = 0.9
_TOMBSTONES = 10_000


@dataclass
class Job:
    """One reconstruction job. Times are UNIX seconds."""

    id: str
    created: float
    scene: str = ""
    views: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    status: str = QUEUED
    stage: str = QUEUED
    done: int = 0
    total: int = 0
    progress: float = 0.0
    started: float | None = None
    finished: float | None = None
    expires: float | None = None
    error: dict[str, str] | None = None
    result_path: Path | None = None
    media_type: str = "application/octet-stream"
    meta: dict[str, Any] = field(default_factory=dict)
    views_done: int = 0  # reference views whose depth map is done
    views_total: int = 0  # reference views to process (views with source views)
    task: Any = None  # the asyncio.Task running it (kept so it is not garbage-collected)

    def update(self, event: dict, now: float) -> None:
        """Apply a ``progress`` event from the engine."""
        if self.status == QUEUED:
            self.status = RUNNING
            self.started = now
        self.stage, self.done, self.total = event["stage"], int(event["done"]), int(event["total"])
        fraction = self.done / self.total if self.total else 0.0
        if self.stage == "depth":
            self.views_done, self.views_total = self.done, self.total
            self.progress = _DEPTH_SHARE * fraction
        else:
            # Fusion done is not the end: the result still has to arrive and be stored.
            self.progress = _DEPTH_SHARE + (1 - _DEPTH_SHARE) * fraction * 0.9

    def to_dict(self, base_url: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "progress": round(self.progress, 4),
            "views": self.views,
            "views_done": self.views_done,
            "views_total": self.views_total,
            "scene": self.scene,
            "options": self.options,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "expires": self.expires,
            "status_url": f"{base_url}/v1/jobs/{self.id}",
        }
        if self.status == DONE:
            out["result_url"] = f"{base_url}/v1/jobs/{self.id}/result"
            out["points"] = self.meta.get("points")
            out["timings"] = self.meta.get("timings")
        if self.error is not None:
            out["error"] = self.error
        return out


class JobStore:
    """Jobs by id, with result files under ``root`` and expiry of finished jobs.

    Args:
        root: a folder owned by the store (created; removed by ``close``).
        ttl_s: seconds a finished job is kept.
        max_jobs: jobs held at once; more are refused with 429.
        clock: time source (tests pass a fake one).
    """

    def __init__(self, root: Path, ttl_s: float, max_jobs: int, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s
        self.max_jobs = max_jobs
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.expired: OrderedDict[str, float] = OrderedDict()

    def check_capacity(self) -> None:
        """429 when ``max_jobs`` jobs are held (after expiring what is due)."""
        self.sweep()
        if len(self.jobs) >= self.max_jobs:
            raise RequestError(
                429, "too_many_jobs",
                f"{len(self.jobs)} jobs are held (max_jobs); delete finished ones or retry later",
            )

    def create(self, scene: str = "", views: int = 0, options: dict | None = None) -> Job:
        self.check_capacity()
        job_id = secrets.token_urlsafe(16)
        job = Job(job_id, self.clock(), scene=scene, views=views, options=options or {})
        self.jobs[job_id] = job
        return job

    def progress(self, job: Job, event: dict) -> None:
        """Apply a progress event to ``job``."""
        job.update(event, self.clock())

    def directory(self, job: Job) -> Path:
        path = self.root / job.id
        path.mkdir(exist_ok=True)
        return path

    def get(self, job_id: str) -> Job:
        """The job, or 404 (never existed) / 410 (expired or deleted)."""
        self.sweep()
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        if job_id in self.expired:
            raise RequestError(410, "job_expired", f"job {job_id} has expired; its result was removed")
        raise RequestError(404, "unknown_job", f"no job {job_id}")

    def finish(self, job: Job, result_path: Path | None = None, media_type: str = "", meta: dict | None = None,
               error: dict | None = None) -> None:
        """Record the outcome (a result file, or an error) and start the expiry clock."""
        now = self.clock()
        job.finished = now
        job.expires = now + self.ttl_s
        if error is not None:
            job.status, job.stage, job.error = FAILED, FAILED, error
        else:
            job.status, job.stage, job.progress = DONE, DONE, 1.0
            job.result_path, job.media_type, job.meta = result_path, media_type, meta or {}

    def remove(self, job_id: str) -> None:
        """Forget a job and delete its files (cancelling its task is the caller's business)."""
        self.jobs.pop(job_id, None)
        shutil.rmtree(self.root / job_id, ignore_errors=True)
        self.expired[job_id] = self.clock()
        while len(self.expired) > _TOMBSTONES:
            self.expired.popitem(last=False)

    def sweep(self) -> list[str]:
        """Remove jobs whose results expired; returns their ids."""
        now = self.clock()
        gone = [j.id for j in self.jobs.values() if j.expires is not None and j.expires <= now]
        for job_id in gone:
            self.remove(job_id)
        return gone

    def counts(self) -> dict[str, int]:
        counts = {QUEUED: 0, RUNNING: 0, DONE: 0, FAILED: 0}
        for job in self.jobs.values():
            counts[job.status] += 1
        return counts

    def close(self) -> None:
        """Delete every job's files (service shutdown)."""
        self.jobs.clear()
        shutil.rmtree(self.root, ignore_errors=True)
