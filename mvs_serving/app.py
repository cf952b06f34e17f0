"""The Ray Serve application: a FastAPI ingress and a model deployment.

::

    client --HTTP--> ReconstructionAPI (ingress, FastAPI)  --handle, stream--> Reconstructor
                     validates the upload in a per-request       model loaded once per replica
                     temporary directory, keeps the job table    (weights_only), reconstructs and
                     and the job results                         fuses, streams progress + PLY

Endpoints: ``POST /v1/reconstruct`` (scene in, PLY or JSON out, on one connection, for
scenes up to ``sync_max_views``), ``POST /v1/jobs`` / ``GET /v1/jobs/{id}`` /
``GET /v1/jobs/{id}/result`` / ``DELETE /v1/jobs/{id}`` (asynchronous, any size up to
``max_views``), ``GET /v1/health``; OpenAPI at ``/docs``.

Use with ``serve run serve_config.yaml`` / ``serve deploy serve_config.yaml`` (the YAML's
``import_path`` is ``mvs_serving.app:build_app``) or ``mvs serve``.
"""

# No ``from __future__ import annotations`` here: FastAPI must see the real ``Request`` type
# of the endpoint methods after Serve rewrites their signatures.
import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import mvs
from mvs_serving import API_VERSION
from mvs_serving.config import ServiceConfig
from mvs_serving.errors import RequestError
from mvs_serving.jobs import DONE, FAILED, Job, JobStore
from mvs_serving.options import OUTPUTS, ReconstructOptions, option_parsers, parse_options
from mvs_serving.payload import ScenePayload
from mvs_serving.uploads import PreparedScene, prepare_scene, read_multipart, split_form

logger = logging.getLogger("ray.serve")

INGRESS, MODEL = "ReconstructionAPI", "Reconstructor"

api = FastAPI(
    title="mvs reconstruction service",
    version=mvs.__version__,
    description=(
        "Learned multi-view stereo over HTTP: calibrated photographs (MVSNet test layout) in, "
        "a fused coloured point cloud out. Errors are JSON `{\"error\": CODE, \"detail\": MESSAGE}` "
        "naming the file, line or option at fault."
    ),
    docs_url="/docs",
)


# ----------------------------------------------------------------------------- error bodies


@api.exception_handler(RequestError)
async def _request_error(request: Request, error: RequestError) -> JSONResponse:
    return JSONResponse(error.to_dict(), status_code=error.status)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
    codes = {404: "not_found", 405: "method_not_allowed"}
    return JSONResponse(
        {"error": codes.get(error.status_code, "http_error"), "detail": str(error.detail)},
        status_code=error.status_code, headers=getattr(error, "headers", None),
    )


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
    return JSONResponse({"error": "invalid_request", "detail": detail}, status_code=422)


@api.exception_handler(Exception)
async def _internal_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal_error", "detail": _short(error)}, status_code=500)


def _short(error: BaseException) -> str:
    """One line for a client: Ray wraps remote errors with a traceback; keep the last line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:500]


# ----------------------------------------------------------------------------- OpenAPI


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number"}


def _form_schema() -> dict[str, Any]:
    """The multipart request body, for /docs (the endpoints parse the stream themselves)."""
    binary = {"type": "string", "format": "binary"}
    properties: dict[str, Any] = {
        "archive": {**binary, "description": "zip or tar(.gz/.bz2/.xz) in the MVSNet test layout: "
                    "images/, cams/, pair.txt (at the top or under one folder)"},
        "images": {"type": "array", "items": binary, "description": "one image per view, named by "
                   "view id (00000000.jpg); instead of archive"},
        "cams": {"type": "array", "items": binary, "description": "MVSNet camera files "
                 "(00000000_cam.txt); instead of archive"},
        "pair": {**binary, "description": "pair.txt (optional: chosen from the cameras when absent)"},
    }
    descriptions = {
        "max_dim": "longer image side processed, pixels",
        "num_sources": "source views per reference view",
        "confidence_threshold": "fusion: minimum confidence in [0, 1]",
        "reprojection_error": "fusion: pixels",
        "relative_depth_error": "fusion: |d' - d| / d",
        "min_consistent_views": "fusion: sources a pixel must agree with",
        "consistency": "fusion: fixed, or dynamic (D2HC-RMVSNet-style thresholds that tighten as more views agree)",
        "normals": "true: unit normals per point in the PLY",
        "source_view": "true: each point's reference view id as a PLY vertex property",
        "output": f"one of {', '.join(OUTPUTS)} (ply: binary PLY; json: per-view statistics and depth previews)",
        "depth_line": "interval or min_max: how line 11 of the cam files reads",
    }
    defaults = ReconstructOptions().to_dict()
    for name in option_parsers(ServiceConfig()):
        kind = _JSON_TYPES.get(type(defaults[name]), "string")
        default = ServiceConfig().default_max_dim if name == "max_dim" else defaults[name]
        properties[name] = {"type": kind, "default": default, "description": descriptions[name]}
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties}}},
        }
    }


_ERRORS = {
    status: {"description": text, "content": {"application/json": {"example": {"error": code, "detail": "..."}}}}
    for status, text, code in (
        (400, "malformed request or unsafe archive", "unsafe_archive"),
        (413, "beyond a configured limit (bytes, views, pixels)", "upload_too_large"),
        (415, "not multipart/form-data", "unsupported_media_type"),
        (422, "the scene or an option cannot be used", "invalid_scene"),
    )
}


# ----------------------------------------------------------------------------- model


@serve.deployment(name=MODEL, max_ongoing_requests=1, ray_actor_options={"num_cpus": 1})
class Reconstructor:
    """Holds the network (loaded once per replica) and reconstructs payloads one at a time."""

    def __init__(self, settings: dict[str, Any]):
        import torch

        from mvs.checkpoint import DEFAULT_CHECKPOINT, load_model
        from mvs_serving.engine import resolve_device

        self.config = ServiceConfig.from_dict(settings)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        self.device = resolve_device(self.config.device)
        # load_model reads the checkpoint with torch.load(weights_only=True): no code is unpickled.
        self.model, checkpoint = load_model(self.config.checkpoint, self.device)
        self.info = {
            "checkpoint": str(self.config.checkpoint or DEFAULT_CHECKPOINT),
            "model_config": checkpoint.get("model_config", {}),
            "device": self.device,
            "torch_threads": torch.get_num_threads(),
        }
        logger.info("model loaded: %s", self.info)

    def run(self, payload: ScenePayload, options: ReconstructOptions) -> Iterator[dict]:
        """Stream of engine events (see ``mvs_serving.engine``)."""
        from mvs_serving.engine import run_payload

        yield from run_payload(self.model, payload, options, self.device, self.config.tmp_dir, self.config.chunk_bytes)


# ----------------------------------------------------------------------------- ingress


def _base_url(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _result_headers(meta: dict, pairs_generated: bool) -> dict[str, str]:
    timings = meta["timings"]
    server_timing = ", ".join(
        f"{name.removesuffix('_s')};dur={1000 * value:.1f}"
        for name, value in timings.items() if isinstance(value, int | float)
    )
    width, height = meta["processed_size"]
    return {
        "X-MVS-Points": str(meta["points"]),
        "X-MVS-Views": str(meta["views"]),
        "X-MVS-Processed-Size": f"{width}x{height}",
        "X-MVS-Pairs": "generated" if pairs_generated else "uploaded",
        "X-MVS-Timings": json.dumps(timings, separators=(",", ":")),
        "Server-Timing": server_timing,
        "Content-Disposition": f'attachment; filename="{meta["scene"] or "fused"}.ply"',
    }


def _json_result(meta: dict, pairs_generated: bool) -> dict[str, Any]:
    return {**meta, "pairs": "generated" if pairs_generated else "uploaded"}


@serve.deployment(name=INGRESS, max_ongoing_requests=64, ray_actor_options={"num_cpus": 0.25})
@serve.ingress(api)
class ReconstructionAPI:
    """HTTP front: validation, the synchronous endpoint, and the asynchronous jobs.

    The job table lives in this replica: run one ingress replica (the model deployment is
    the one that scales).
    """

    def __init__(self, model: DeploymentHandle, settings: dict[str, Any]):
        self.config = ServiceConfig.from_dict(settings)
        self.model = model
        if self.config.tmp_dir:
            Path(self.config.tmp_dir).mkdir(parents=True, exist_ok=True)
        self.jobs = JobStore(
            Path(tempfile.mkdtemp(prefix="mvs-serve-jobs-", dir=self.config.tmp_dir)),
            self.config.job_ttl_s, self.config.max_jobs,
        )
        self._sweeper: asyncio.Task | None = None

    def __del__(self) -> None:
        # Serve calls this on shutdown: results are not kept past the service's life.
        for job in list(self.jobs.jobs.values()):
            if job.task is not None and not job.task.done():
                job.task.cancel()
        self.jobs.close()

    # ------------------------------------------------------------------ shared steps

    async def _receive(self, request: Request, max_views: int, hint: str = "") -> tuple[PreparedScene, ReconstructOptions, float]:
        """Parse, unpack and validate an upload; returns the prepared scene, options, seconds."""
        tick = time.perf_counter()
        form = await read_multipart(request, self.config)
        try:
            files, fields = split_form(form)
            options = parse_options(fields, self.config)
            # Decoding every image is CPU work: off the event loop, so health checks and job
            # polls stay responsive.
            prepared = await asyncio.to_thread(prepare_scene, files, options, self.config, max_views, hint)
        finally:
            await form.close()
        return prepared, options, time.perf_counter() - tick

    async def _reconstruct(
        self, payload: ScenePayload, options: ReconstructOptions, sink: Callable[[bytes], Awaitable[None]],
        job: Job | None = None,
    ) -> dict:
        """Run the payload on a model replica; PLY pieces go to ``sink``; returns the meta."""
        called = time.perf_counter()
        queue_seconds = None
        meta = None
        stream = self.model.options(stream=True).run.remote(payload, options)
        async for event in stream:
            kind = event["type"]
            if kind == "started":
                queue_seconds = time.perf_counter() - called
            elif kind == "progress":
                if job is not None:
                    self.jobs.progress(job, event)
            elif kind == "error":
                raise RequestError(event["status"], event["error"], event["detail"])
            elif kind == "result":
                meta = event["meta"]
            elif kind == "chunk":
                await sink(event["data"])
        if meta is None:
            raise RuntimeError("the model replica ended without a result")
        meta["timings"]["queue_s"] = round(queue_seconds or 0.0, 4)
        return meta

    def _ensure_sweeper(self) -> None:
        """Expire results even when nobody asks (started on first use: needs the running loop)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        period = max(0.5, min(30.0, self.config.job_ttl_s / 4))
        while True:
            await asyncio.sleep(period)
            for job_id in self.jobs.sweep():
                logger.info("job %s expired", job_id)

    # ------------------------------------------------------------------ endpoints

    @api.get("/v1/health", summary="service status, limits and job counts")
    async def health(self) -> dict[str, Any]:
        self.jobs.sweep()
        return {
            "status": "ok",
            "service": "mvs",
            "version": mvs.__version__,
            "api": API_VERSION,
            "jobs": self.jobs.counts(),
            "limits": self.config.limits(),
        }

    @api.post(
        "/v1/reconstruct",
        summary="reconstruct a scene on this connection (scenes up to sync_max_views views)",
        openapi_extra=_form_schema(),
        responses={200: {"description": "binary PLY (output=ply) or JSON (output=json); X-MVS-Points, "
                         "X-MVS-Timings and Server-Timing headers", "content": {"application/octet-stream": {}}},
                   **_ERRORS},
    )
    async def reconstruct(self, request: Request) -> Response:
        start = time.perf_counter()
        hint = " for POST /v1/reconstruct (sync_max_views); send larger scenes to POST /v1/jobs"
        prepared, options, validate_seconds = await self._receive(request, self.config.sync_max_views, hint)
        chunks: list[bytes] = []

        async def collect(data: bytes) -> None:
            chunks.append(data)

        meta = await self._reconstruct(prepared.payload, options, collect)
        meta["timings"]["validate_s"] = round(validate_seconds, 4)
        meta["timings"]["total_s"] = round(time.perf_counter() - start, 4)
        if options.output == "json":
            return JSONResponse(_json_result(meta, prepared.pairs_generated))
        return Response(b"".join(chunks), media_type="application/octet-stream",
                        headers=_result_headers(meta, prepared.pairs_generated))

    @api.post(
        "/v1/jobs", status_code=202,
        summary="submit a scene as an asynchronous job (any size up to max_views); returns its id",
        openapi_extra=_form_schema(), responses={429: {"description": "too many jobs held"}, **_ERRORS},
    )
    async def submit_job(self, request: Request) -> JSONResponse:
        self.jobs.check_capacity()  # before reading the upload; create() checks again after
        prepared, options, validate_seconds = await self._receive(request, self.config.max_views)
        job = self.jobs.create(prepared.payload.name, prepared.payload.views, options.to_dict())
        job.task = asyncio.create_task(self._run_job(job, prepared, options, validate_seconds))
        self._ensure_sweeper()
        body = job.to_dict(_base_url(request))
        return JSONResponse(body, status_code=202, headers={"Location": body["status_url"]})

    async def _run_job(self, job: Job, prepared: PreparedScene, options: ReconstructOptions,
                       validate_seconds: float) -> None:
        start = time.perf_counter()
        directory = self.jobs.directory(job)
        path = directory / f"result.{options.output}"
        try:
            with open(path, "wb") as out:
                async def write(data: bytes) -> None:
                    await asyncio.to_thread(out.write, data)

                meta = await self._reconstruct(prepared.payload, options, write, job)
            meta["timings"]["validate_s"] = round(validate_seconds, 4)
            meta["timings"]["job_s"] = round(time.perf_counter() - start, 4)
            meta["pairs"] = "generated" if prepared.pairs_generated else "uploaded"
            if options.output == "json":
                path.write_text(json.dumps(_json_result(meta, prepared.pairs_generated)))
                media_type = "application/json"
            else:
                media_type = "application/octet-stream"
            summary = {k: v for k, v in meta.items() if k != "per_view"}
            self.jobs.finish(job, path, media_type, summary)
            logger.info("job %s done: %s points in %.1f s", job.id, meta["points"], meta["timings"]["job_s"])
        except asyncio.CancelledError:
            raise
        except RequestError as error:
            self.jobs.finish(job, error={**error.to_dict(), "status": error.status})
        except Exception as error:
            logger.exception("job %s failed", job.id)
            self.jobs.finish(job, error={"error": "reconstruction_failed", "detail": _short(error), "status": 500})

    @api.get("/v1/jobs/{job_id}", summary="status and progress of a job")
    async def job_status(self, job_id: str, request: Request) -> dict[str, Any]:
        return self.jobs.get(job_id).to_dict(_base_url(request))

    @api.get(
        "/v1/jobs/{job_id}/result",
        summary="the result of a finished job (PLY or JSON, as asked)",
        responses={409: {"description": "not finished yet, or failed"}, 410: {"description": "expired"}},
    )
    async def job_result(self, job_id: str) -> Response:
        job = self.jobs.get(job_id)
        if job.status == FAILED:
            error = job.error or {}
            raise RequestError(409, "job_failed", f"job {job_id} failed: {error.get('detail', 'unknown error')}")
        if job.status != DONE or job.result_path is None:
            raise RequestError(
                409, "job_not_finished",
                f"job {job_id} is {job.status} ({100 * job.progress:.0f}%); poll GET /v1/jobs/{job_id}",
            )
        if job.media_type == "application/json":
            return FileResponse(job.result_path, media_type=job.media_type)
        headers = _result_headers(job.meta, job.meta.get("pairs") == "generated")
        return FileResponse(job.result_path, media_type=job.media_type, headers=headers)

    @api.delete("/v1/jobs/{job_id}", summary="cancel a job or delete its result")
    async def delete_job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job.task is not None and not job.task.done():
            job.task.cancel()
        self.jobs.remove(job_id)
        return {"id": job_id, "deleted": True}


def build_app(args: dict[str, Any]):
    """The ``import_path`` target of serve_config.yaml (Serve passes the YAML's ``args``).

    Serve requires exactly one parameter; ``serve run`` / ``serve deploy`` then apply the
    YAML's ``deployments`` entries themselves.
    """
    return build_application(args)


def build_application(args: dict[str, Any] | None = None, deployment_options: dict[str, dict] | None = None):
    """The Serve application: the ingress bound to the model deployment.

    Args:
        args: service settings (``ServiceConfig`` fields), the YAML's ``args``.
        deployment_options: per deployment name (``ReconstructionAPI``, ``Reconstructor``),
            options for ``Deployment.options`` (``num_replicas``, ``autoscaling_config``,
            ``ray_actor_options``, ...), as ``mvs serve`` reads them from the YAML.
    """
    settings = ServiceConfig.from_dict(args).to_dict()
    deployment_options = dict(deployment_options or {})
    unknown = sorted(set(deployment_options) - {INGRESS, MODEL})
    if unknown:
        raise ValueError(f"unknown deployment(s) {unknown}; this application has {INGRESS} and {MODEL}")
    model = Reconstructor.options(**deployment_options.get(MODEL, {})).bind(settings)
    return ReconstructionAPI.options(**deployment_options.get(INGRESS, {})).bind(model, settings)
