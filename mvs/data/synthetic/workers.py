"""Rendering and writing the views of a scene, in this process or in worker processes.

Views are independent (each has its own random stream), so the output does not depend on
how many processes render them. Worker processes are *spawned* (open3d's thread pools do
not survive ``fork``); each loads the scene description from a pickle once per scene and
runs single-threaded, one process per core. Threads are not used: open3d and numpy
contend for the GIL and cores, which made two threads slower than one.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from mvs.cameras import Camera
from mvs.data.synthetic.config import KEY_VIEW, SynthConfig, stream
from mvs.data.synthetic.render import Renderer
from mvs.data.synthetic.scene import SceneSpec
from mvs.data.synthetic.visibility import Views, plan_chunks, point_colors, sample_chunk
from mvs.data.synthetic.writer import depth_range, fallback_range, write_test_view, write_train_view

# Below this many pixels in a scene, starting worker processes costs more than it saves.
PARALLEL_MIN_PIXELS = 3_000_000


@dataclass(frozen=True)
class ViewOutput:
    """Where and how the rendered views are written."""

    layout: str  # "test" or "train"
    root: Path
    lights: tuple[int, ...]  # lighting conditions to render
    scan: int = 0  # train layout
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)  # test: fallback depth range centre


def render_and_write(renderer: Renderer, camera: Camera, view: int, seed: int, config: SynthConfig,
                     output: ViewOutput) -> tuple[np.ndarray, np.ndarray]:
    """Render one view, write its files; return its GT depth and pixel-centre triangle ids."""
    render = renderer.render_view(camera, list(output.lights), stream(seed, KEY_VIEW, view),
                                  config.supersample, config.shadows, config.noise_sigma,
                                  config.full_supersampling)
    if output.layout == "test":
        limits = depth_range([render.depth], config.depth_margin)
        limits = limits or fallback_range(camera, np.array(output.target))
        final = camera.with_depth_range(*limits, config.depth_num)
        write_test_view(output.root, view, final, render, output.lights[0], config.depth_num,
                        config.jpeg_quality)
    else:
        write_train_view(output.root, output.scan, view, render)
    return render.depth, render.primitive.astype(np.int32)


# ----------------------------------------------------------------------------- worker side
_CACHE: dict = {"path": None, "renderer": None, "views_path": None, "views": None}


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)


def _warm_up() -> None:
    """Nothing: importing this module (to run it) is the work."""


def _cached_renderer(spec_path: str) -> Renderer:
    if _CACHE["path"] != spec_path:
        with open(spec_path, "rb") as f:
            spec = pickle.load(f)
        _CACHE["renderer"] = Renderer(spec, threads=1)
        _CACHE["path"] = spec_path
    return _CACHE["renderer"]


def _worker_task(spec_path: str, camera: Camera, view: int, seed: int, config: SynthConfig,
                 output: ViewOutput) -> tuple[int, np.ndarray, np.ndarray]:
    depth, primitive = render_and_write(_cached_renderer(spec_path), camera, view, seed, config, output)
    return view, depth, primitive


def _worker_surface(spec_path: str, views_path: str, chunk: np.ndarray, spacing: float, seed: int,
                    key: int, index: int, ground_margin: float | None) -> tuple[int, np.ndarray, np.ndarray]:
    renderer = _cached_renderer(spec_path)
    if _CACHE["views_path"] != views_path:
        with open(views_path, "rb") as f:
            _CACHE["views"] = pickle.load(f)
        _CACHE["views_path"] = views_path
    views = _CACHE["views"].attach(renderer)
    points, colors = surface_chunk(views, chunk, spacing, stream(seed, key, index), ground_margin)
    return index, points, colors


def surface_chunk(views: Views, chunk: np.ndarray, spacing: float, rng: np.random.Generator,
                  ground_margin: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Visible surface samples of one chunk of triangles and their colours."""
    samples = sample_chunk(views, chunk, spacing, rng, ground_margin)
    return samples.points, point_colors(views.renderer, samples)


# ----------------------------------------------------------------------------- caller side
def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class ViewRenderer:
    """Renders the views of successive scenes; owns the worker processes, if any."""

    def __init__(self, config: SynthConfig):
        self.config = config
        pixels = config.views * config.width * config.height
        if config.workers > 0:
            self.workers = config.workers
        else:
            self.workers = available_cores() if pixels >= PARALLEL_MIN_PIXELS else 1
        self._pool: ProcessPoolExecutor | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._files = 0
        self._spec: tuple[SceneSpec, str] | None = None  # the scene the workers hold, its pickle

    def __enter__(self) -> ViewRenderer:
        if self.workers > 1:
            # Start the workers now: their imports overlap with the scene set-up.
            try:
                pool = self._executor()
                for _ in range(self.workers):
                    pool.submit(_warm_up)
            except (OSError, RuntimeError):
                self.close()
                self.workers = 1
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self._spec = None

    def render(self, spec: SceneSpec, renderer: Renderer, cameras: list[Camera], seed: int,
               output: ViewOutput, progress: bool = False,
               desc: str = "views") -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Render and write every view; return GT depths and triangle-id maps in view order."""
        with tqdm(total=len(cameras), desc=desc, unit="view", disable=not progress, leave=False) as bar:
            if self.workers > 1:
                try:
                    return self._parallel(spec, cameras, seed, output, bar)
                except (BrokenProcessPool, OSError, RuntimeError):
                    # No worker processes here (a daemon, a sandbox): render in-process.
                    self.close()
                    self.workers = 1
                    bar.reset()
            results = []
            for view, camera in enumerate(cameras):
                results.append(render_and_write(renderer, camera, view, seed, self.config, output))
                bar.update(1)
        return [r[0] for r in results], [r[1] for r in results]

    def _dump(self, content) -> str:
        """Pickle ``content`` into this renderer's temporary folder; return the path."""
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="mvs-synth-")
        self._files += 1
        path = os.path.join(self._tmp.name, f"{self._files}.pkl")
        with open(path, "wb") as f:
            pickle.dump(content, f, protocol=pickle.HIGHEST_PROTOCOL)
        return path

    def _spec_path(self, spec: SceneSpec) -> str:
        # Keyed by identity; holding the spec keeps its id from being reused by the next one.
        if self._spec is None or self._spec[0] is not spec:
            if self._spec is not None:
                os.remove(self._spec[1])
            self._spec = (spec, self._dump(spec))
        return self._spec[1]

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker)
        return self._pool

    def _parallel(self, spec, cameras, seed, output, bar):
        pool, spec_path = self._executor(), self._spec_path(spec)
        futures = [pool.submit(_worker_task, spec_path, camera, view, seed, self.config, output)
                   for view, camera in enumerate(cameras)]
        depths: list = [None] * len(cameras)
        primitives: list = [None] * len(cameras)
        for future in futures:
            view, depth, primitive = future.result()
            depths[view], primitives[view] = depth, primitive
            bar.update(1)
        return depths, primitives

    def surface_points(self, spec: SceneSpec, views: Views, spacing: float, seed: int, key: int,
                       ground_margin: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Points on the surface some camera sees (one per ``spacing``^2 on average) and their
        colours: (N, 3) float32 and (N, 3) uint8. The same for any number of workers."""
        chunks = plan_chunks(views, spacing, ground_margin)
        parts = None
        if self.workers > 1 and len(chunks) > 1:
            try:
                pool, spec_path = self._executor(), self._spec_path(spec)
                views_path = self._dump(views)
                futures = [pool.submit(_worker_surface, spec_path, views_path, chunk, spacing, seed, key, k,
                                       ground_margin) for k, chunk in enumerate(chunks)]
                parts = [None] * len(chunks)
                for future in futures:
                    k, points, colors = future.result()
                    parts[k] = (points, colors)
                os.remove(views_path)
            except (BrokenProcessPool, OSError, RuntimeError):
                self.close()
                self.workers = 1
                parts = None
        if parts is None:
            parts = [surface_chunk(views, chunk, spacing, stream(seed, key, k), ground_margin)
                     for k, chunk in enumerate(chunks)]
        if not parts:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

