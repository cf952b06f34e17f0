"""Reconstruction of a scene payload with a loaded model, as a stream of events. No Ray here.

The model replica runs ``run_payload`` and forwards its events to the ingress; the
benchmark calls the same code in-process to measure what Serve adds. The work is the core
library's: ``mvs.inference.SceneReconstruction`` (the steps ``reconstruct_scene`` runs,
kept in memory and driven here view by view so progress streams out), then
``FusedCloud.write_ply``. This module only turns the steps into events.

Events (plain dicts, so they cross process boundaries as they are)::

    {"type": "started"}
    {"type": "progress", "stage": "depth", "done": i, "total": n}
    {"type": "progress", "stage": "fusion", "done": 0, "total": 1}
    {"type": "error", "status": 422, "error": "invalid_scene", "detail": "..."}
    {"type": "result", "meta": {...}}          points, views, timings, per-view statistics
    {"type": "chunk", "data": b"..."}           the PLY (ply output), in order
"""

from __future__ import annotations

import base64
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from mvs.data.scene import Scene
from mvs.errors import MVSInputError
from mvs.inference import SceneReconstruction
from mvs.visualize import colorize
from mvs_serving.errors import relative_message
from mvs_serving.options import ReconstructOptions
from mvs_serving.payload import ScenePayload

PREVIEW_MAX_DIM = 320  # longer side of the depth previews in JSON output


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when this process can see a GPU, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _png_base64(image: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return base64.b64encode(data.tobytes()).decode("ascii")


def depth_preview(depth: np.ndarray, confidence: np.ndarray, depth_range: tuple[float, float]) -> dict[str, str]:
    """Colour-mapped depth (turbo over the camera's range, black = none) and confidence, as PNG."""
    height, width = depth.shape
    scale = min(1.0, PREVIEW_MAX_DIM / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small_depth = cv2.resize(depth, size, interpolation=cv2.INTER_NEAREST)
    small_conf = cv2.resize(confidence, size, interpolation=cv2.INTER_AREA)
    depth_rgb = colorize(small_depth, small_depth > 0, *depth_range)
    conf_grey = (np.clip(small_conf, 0, 1) * 255).astype(np.uint8)
    return {"depth_png": _png_base64(depth_rgb), "confidence_png": _png_base64(conf_grey)}


def reconstruct_events(
    model: torch.nn.Module,
    scene: Scene,
    options: ReconstructOptions,
    device: str,
    work_dir: Path,
    chunk_bytes: int = 4 << 20,
) -> Iterator[dict]:
    """Depth for every reference view, fusion, and the result; see the module docstring.

    Args:
        model: a loaded network in eval mode on ``device``.
        scene: a validated scene.
        options: what the request asked for.
        work_dir: an existing scratch folder (the PLY is written there before it is sent).
        chunk_bytes: size of the PLY pieces sent as ``chunk`` events.
    """
    start = time.perf_counter()
    try:
        run = SceneReconstruction(scene, model, options.reconstruct_config(device))
    except MVSInputError as error:  # the ingress refuses such scenes already: a safety net
        yield {"type": "error", "status": 422, "error": "invalid_scene", "detail": relative_message(error, scene.root)}
        return
    total = len(run.references)
    per_view: list[dict] = []
    yield {"type": "progress", "stage": "depth", "done": 0, "total": total}
    for done, result in enumerate(run.depth_maps(), 1):
        depth, confidence = result.depth, result.confidence
        valid = depth > 0
        camera = scene.views[result.view].camera
        view = {
            "view": result.view,
            "sources": result.sources,
            "seconds": round(result.seconds, 4),
            "depth_valid_fraction": round(float(valid.mean()), 4),
            "depth_median": float(np.median(depth[valid])) if valid.any() else None,
            "mean_confidence": round(float(confidence[valid].mean()), 4) if valid.any() else None,
        }
        if options.output == "json":
            view.update(depth_preview(depth, confidence, (camera.depth_min, camera.depth_max)))
        per_view.append(view)
        yield {"type": "progress", "stage": "depth", "done": done, "total": total}
    depth_seconds = time.perf_counter() - start

    yield {"type": "progress", "stage": "fusion", "done": 0, "total": 1}
    tick = time.perf_counter()
    cloud = run.fuse()
    fusion_seconds = time.perf_counter() - tick
    by_view = {s.view: s for s in cloud.stats}
    for view in per_view:
        stats = by_view.get(view["view"])
        if stats is not None:
            view.update(
                pixels=stats.pixels, with_depth=stats.with_depth,
                kept_by_confidence=stats.kept_by_confidence, kept_by_consistency=stats.kept_by_consistency,
            )
    yield {"type": "progress", "stage": "fusion", "done": 1, "total": 1}

    tick = time.perf_counter()
    ply_path = work_dir / "fused.ply"
    if options.output == "ply":
        cloud.write_ply(ply_path, source_view=options.source_view)
    write_seconds = time.perf_counter() - tick
    meta = {
        "scene": scene.name,
        "points": int(len(cloud.points)),
        "views": total,
        "processed_size": [run.width, run.height],
        "device": str(device),
        "options": options.to_dict(),
        "timings": {
            "depth_s": round(depth_seconds, 4),
            "fusion_s": round(fusion_seconds, 4),
            "write_s": round(write_seconds, 4),
            "reconstruct_s": round(time.perf_counter() - start, 4),
        },
        "per_view": per_view,
    }
    if options.output == "ply":
        meta["ply_bytes"] = ply_path.stat().st_size
    yield {"type": "result", "meta": meta}
    if options.output == "ply":
        with open(ply_path, "rb") as ply:
            while data := ply.read(chunk_bytes):
                yield {"type": "chunk", "data": data}


def run_payload(
    model: torch.nn.Module,
    payload: ScenePayload,
    options: ReconstructOptions,
    device: str,
    tmp_dir: str | None = None,
    chunk_bytes: int = 4 << 20,
) -> Iterator[dict]:
    """Write ``payload`` into a temporary directory, load it and reconstruct it.

    The directory is removed when the generator finishes or is closed early (a client that
    went away). A scene the core loader refuses gives one ``error`` event (422), not an
    exception: the ingress validated it already, so this is a safety net.
    """
    yield {"type": "started"}
    with tempfile.TemporaryDirectory(prefix="mvs-replica-", dir=tmp_dir) as tmp:
        root = Path(tmp) / "scene"
        tick = time.perf_counter()
        try:
            scene = payload.load(root, options.depth_line)
        except MVSInputError as error:
            yield {"type": "error", "status": 422, "error": "invalid_scene", "detail": relative_message(error, root)}
            return
        load_seconds = time.perf_counter() - tick
        for event in reconstruct_events(model, scene, options, device, Path(tmp), chunk_bytes):
            if event["type"] == "result":
                event["meta"]["timings"]["load_s"] = round(load_seconds, 4)
            yield event


def reconstruct_payload(
    model: torch.nn.Module, payload: ScenePayload, options: ReconstructOptions, device: str = "cpu"
) -> tuple[dict, bytes]:
    """In-process reconstruction without Serve: (meta, PLY bytes or b"" for json output)."""
    meta: dict | None = None
    chunks: list[bytes] = []
    for event in run_payload(model, payload, options, device):
        if event["type"] == "error":
            raise MVSInputError(event["detail"])
        if event["type"] == "result":
            meta = event["meta"]
        elif event["type"] == "chunk":
            chunks.append(event["data"])
    if meta is None:
        raise RuntimeError("reconstruction ended without a result")
    return meta, b"".join(chunks)
