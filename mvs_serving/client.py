"""Python client of the reconstruction service (``requests``; no Ray, no torch).

::

    from mvs_serving.client import ReconstructionClient

    client = ReconstructionClient("http://127.0.0.1:8000")
    result = client.reconstruct_job("data/scene", "cloud.ply", max_dim=640)   # any size
    result = client.reconstruct("data/small_scene", "cloud.ply")             # one connection
    print(result.points, result.timings)

A scene is a folder in the MVSNet test layout (``images/``, ``cams/``, optional
``pair.txt``; ground truth and other files are not sent) or an archive file (zip, tar,
tar.gz, ...) sent as it is.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tgz", ".tar.gz", ".tbz2", ".tar.bz2", ".txz", ".tar.xz")


class ServiceError(RuntimeError):
    """The service refused a request: HTTP status, error code and the service's message."""

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(f"HTTP {status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


@dataclass
class Result:
    """A reconstruction result: the file written, or the JSON, and what the headers said."""

    path: Path | None
    points: int | None
    timings: dict[str, float]
    media_type: str
    data: dict[str, Any] | None = None  # JSON output
    headers: dict[str, str] = field(default_factory=dict)


def _raise_for(response: requests.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        code, detail = body.get("error", "error"), body.get("detail", response.text)
    except ValueError:
        code, detail = "error", response.text[:500]
    raise ServiceError(response.status_code, code, detail)


@contextlib.contextmanager
def scene_files(scene: str | Path) -> Iterator[list[tuple[str, tuple[str, Any]]]]:
    """Multipart ``files`` for ``scene`` (a folder or an archive); files are closed after."""
    scene = Path(scene)
    opened = []
    try:
        if scene.is_file():
            if not scene.name.lower().endswith(ARCHIVE_SUFFIXES):
                raise ValueError(f"{scene}: not a scene folder or an archive ({', '.join(ARCHIVE_SUFFIXES)})")
            handle = open(scene, "rb")
            opened.append(handle)
            yield [("archive", (scene.name, handle))]
            return
        if not (scene / "images").is_dir() or not (scene / "cams").is_dir():
            raise ValueError(f"{scene}: not a scene folder in the MVSNet test layout (images/, cams/, pair.txt)")
        files = []
        for field_name, folder, keep in (
            ("images", scene / "images", lambda p: p.suffix.lower() in IMAGE_SUFFIXES),
            ("cams", scene / "cams", lambda p: p.name.endswith("_cam.txt")),
        ):
            for path in sorted(folder.iterdir()):
                if path.is_file() and keep(path):
                    handle = open(path, "rb")
                    opened.append(handle)
                    files.append((field_name, (path.name, handle)))
        if (scene / "pair.txt").is_file():
            handle = open(scene / "pair.txt", "rb")
            opened.append(handle)
            files.append(("pair", ("pair.txt", handle)))
        yield files
    finally:
        for handle in opened:
            handle.close()


def _form(options: dict[str, Any]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items() if v is not None}


class ReconstructionClient:
    """Talks to one service.

    Args:
        url: the service root, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds for each HTTP exchange (uploads and downloads included; a
            synchronous reconstruction must also finish within it).
    """

    def __init__(self, url: str, timeout: float = 600.0, session: requests.Session | None = None):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()

    # ------------------------------------------------------------------ plain calls

    def health(self) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/v1/health", timeout=self.timeout)
        _raise_for(response)
        return response.json()

    def reconstruct(self, scene: str | Path, out: str | Path | None = None, **options: Any) -> Result:
        """POST /v1/reconstruct: the whole reconstruction on one connection (small scenes).

        Options: ``max_dim``, ``num_sources``, ``confidence_threshold``,
        ``reprojection_error``, ``relative_depth_error``, ``min_consistent_views``,
        ``output`` (``ply`` or ``json``), ``depth_line``. A PLY goes to ``out``.
        """
        with scene_files(scene) as files:
            response = self.session.post(f"{self.url}/v1/reconstruct", files=files, data=_form(options),
                                         timeout=self.timeout)
        _raise_for(response)
        return self._result(response, out)

    def submit(self, scene: str | Path, **options: Any) -> dict[str, Any]:
        """POST /v1/jobs: upload and validate; returns the job (``id``, ``status_url``)."""
        with scene_files(scene) as files:
            response = self.session.post(f"{self.url}/v1/jobs", files=files, data=_form(options),
                                         timeout=self.timeout)
        _raise_for(response)
        return response.json()

    def status(self, job_id: str) -> dict[str, Any]:
        response = self.session.get(f"{self.url}/v1/jobs/{job_id}", timeout=self.timeout)
        _raise_for(response)
        return response.json()

    def wait(self, job_id: str, poll_s: float = 1.0, timeout_s: float | None = None,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the job is done (returned) or failed (``ServiceError``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.status(job_id)
            if on_progress is not None:
                on_progress(job)
            if job["status"] == "done":
                return job
            if job["status"] == "failed":
                error = job.get("error") or {}
                raise ServiceError(int(error.get("status", 500)), error.get("error", "job_failed"),
                                   error.get("detail", "job failed"))
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} not done after {timeout_s:.0f} s ({job['status']}, "
                                   f"{100 * job['progress']:.0f}%)")
            time.sleep(poll_s)

    def result(self, job_id: str, out: str | Path | None = None) -> Result:
        """GET /v1/jobs/{id}/result, streamed to ``out`` for a PLY."""
        response = self.session.get(f"{self.url}/v1/jobs/{job_id}/result", timeout=self.timeout, stream=True)
        _raise_for(response)
        return self._result(response, out)

    def delete(self, job_id: str) -> None:
        response = self.session.delete(f"{self.url}/v1/jobs/{job_id}", timeout=self.timeout)
        _raise_for(response)

    # ------------------------------------------------------------------ the whole path

    def reconstruct_job(self, scene: str | Path, out: str | Path | None = None, poll_s: float = 1.0,
                        timeout_s: float | None = None,
                        on_progress: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> Result:
        """Submit, wait and download: no connection is held while the scene is processed."""
        job = self.submit(scene, **options)
        self.wait(job["id"], poll_s, timeout_s, on_progress)
        return self.result(job["id"], out)

    def _result(self, response: requests.Response, out: str | Path | None) -> Result:
        media_type = response.headers.get("content-type", "").split(";")[0]
        headers = dict(response.headers)
        if media_type == "application/json":
            data = response.json()
            if out is not None:
                Path(out).write_text(json.dumps(data, indent=2))
            return Result(Path(out) if out else None, data.get("points"), data.get("timings", {}), media_type,
                          data, headers)
        timings = json.loads(response.headers.get("X-MVS-Timings", "{}"))
        points = response.headers.get("X-MVS-Points")
        path = None
        if out is not None:
            path = Path(out)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as target:
                for chunk in response.iter_content(1 << 20):
                    target.write(chunk)
        else:
            response.content  # noqa: B018 - read the body so the connection is released
        return Result(path, int(points) if points is not None else None, timings, media_type, None, headers)


def client_main(args) -> int:
    """``mvs client``: ``reconstruct`` (job by default, ``--sync`` for one connection) and ``health``."""
    import sys

    client = ReconstructionClient(args.url, timeout=args.http_timeout)
    try:
        if args.client_command == "health":
            print(json.dumps(client.health(), indent=2))
            return 0
        options = {
            "max_dim": args.max_dim, "num_sources": args.num_sources, "output": args.output,
            "confidence_threshold": args.confidence_threshold, "reprojection_error": args.reprojection_error,
            "relative_depth_error": args.relative_depth_error, "min_consistent_views": args.min_consistent_views,
            "depth_line": args.depth_line, "consistency": args.consistency,
            "normals": args.normals, "source_view": args.source_view,
        }
        start = time.perf_counter()
        if args.sync:
            result = client.reconstruct(args.scene, args.out, **options)
        else:
            last = [""]

            def show(job: dict[str, Any]) -> None:
                line = (f"job {job['id'][:8]}: {job['status']:<8} {job['stage']:<7} "
                        f"{100 * job['progress']:5.1f}%  views {job['views_done']}/{job['views_total'] or '?'}")
                if line != last[0]:
                    print(line, file=sys.stderr, flush=True)
                    last[0] = line

            result = client.reconstruct_job(args.scene, args.out, poll_s=args.poll, timeout_s=args.timeout,
                                            on_progress=show, **options)
    except ServiceError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (ValueError, requests.RequestException, TimeoutError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    what = f"{result.points:,} points" if result.points is not None else "result"
    print(f"{what} -> {result.path} in {time.perf_counter() - start:.1f} s; server timings {result.timings}")
    return 0
