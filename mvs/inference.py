"""Run a trained network over a scene, view by view, then fuse the depth maps.

Output folder::

    OUT/depths/XXXXXXXX.pfm       depth at the processed resolution (0 = none)
    OUT/confidence/XXXXXXXX.pfm   probability mass around each estimate, in [0, 1]
    OUT/preview/XXXXXXXX.png      image | colour-mapped depth | confidence
    OUT/fused.ply, OUT/fused.json the fused cloud and per-view counts
    OUT/reconstruction.json       settings, timings, peak memory
"""

from __future__ import annotations

import json
import resource
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mvs.cameras import stack_cameras
from mvs.data.dataset import fit_size, resize_view
from mvs.data.scene import Scene
from mvs.errors import MVSInputError
from mvs.fusion import FusedCloud, FusionConfig, fuse_depth_maps
from mvs.io import read_pfm, write_pfm
from mvs.visualize import save_depth_preview


@dataclass
class ReconstructConfig:
    max_dim: int | None = 1600  # longer image side processed (None: full resolution)
    # Scale cascade (None: off). Above this longer side the network first runs on the views
    # resized to it; its depth and confidence, upsampled, guide the last stage at the
    # processed size (CascadeMVSNet's ``guide``). The shipped network was trained on
    # 640x512 images: at 1600x1152 its coarse stages see textures 2.5x larger than in
    # training and put weakly textured surfaces wrong, which the 640 px pass gets right.
    # With 5 views it beat one scale on the held-out synthetic scene at 1600x1152 (depth
    # within 2 / 4 mm 76.3 / 87.3% against 74.2 / 83.7%, cloud 0.378 against 0.385 mm) and
    # kept real DTU scan 24 as clean (silhouette consistency 98.02% against 98.11%).
    coarse_max_dim: int | None = 640
    # Reference + sources (pair.txt lists at most 10, so 11 is all of them). Averaging more
    # sources' matching costs puts more pixels right: on the held-out synthetic scene at
    # 1600x1152, 86.2% / 92.9% within 2 / 4 mm against 83.2% / 92.0% with 5, for 1.5-1.7x
    # the time per view on a CPU (README, Measured results). Sources that see little of the
    # reference are left out by ``min_source_score`` instead (a sparse ring keeps its two
    # neighbours); ``5`` is the fast setting.
    num_views: int = 11
    # With the scale cascade: views of the stages before the last at the processed size
    # (None: num_views; more than num_views: num_views). The first pass's guide overrides
    # most of their depth, so they need fewer views than the last stage; without a first
    # pass (images no larger than coarse_max_dim) every stage uses num_views (at 640x512,
    # 5 early views instead of 11 lost 5 points within 2 mm). 0 skips them and runs the last
    # stage alone around the first pass: faster, but parts too thin for the first pass are
    # lost (benchmarks/results/scale_cascade.json).
    early_views: int | None = 5
    # With the scale cascade: views of the first pass (None: num_views; pair.txt lists at most
    # 10 sources, so 11 is all of them). At 640 px more views cost little and give a better
    # guide: on the held-out synthetic scene at 1600x1152, 11 views there with 5 at full
    # size put 81.8% / 90.9% of pixels within 2 / 4 mm against 76.3% / 87.3% with 5, in
    # about the same time per view on a CPU; on an H100 0.159 s per view against 0.095 s
    # with 5 (README, Measured results).
    coarse_views: int | None = 11
    # Sources whose pair.txt score is below this fraction of the reference's best source are
    # not used (Scene.source_views). On the sparse Middlebury ring most listed sources score
    # under 1% of the best two and see little of the reference; synthetic and DTU lists keep
    # all ten (their tenth scores about 10% of the first).
    min_source_score: float = 0.05
    device: str = "cpu"
    # On a CPU, feature pyramids kept across reference views (FeatureCache), GB; 0: none. On a
    # GPU the pyramid is a small part of the pass and GPU memory is kept for the volumes.
    feature_cache_gb: float = 1.4
    mixed_precision: bool = True  # on CUDA, float16 autocast (False: float32); ignored on CPU
    previews: bool = True
    fuse: bool = True
    fusion: FusionConfig = field(default_factory=FusionConfig)

    def __post_init__(self) -> None:
        if self.coarse_max_dim is not None and self.coarse_max_dim < 32:
            raise ValueError(f"coarse_max_dim must be None (one scale) or at least 32 pixels, got {self.coarse_max_dim}")
        if self.num_views < 2:
            raise ValueError(f"num_views must be at least 2 (a reference and a source), got {self.num_views}")
        if self.early_views is not None and self.early_views < 2 and self.early_views != 0:
            raise ValueError(f"early_views must be None, 0 or at least 2, got {self.early_views}")
        if self.coarse_views is not None and self.coarse_views < 2:
            raise ValueError(f"coarse_views must be None or at least 2 (a reference and a source), got {self.coarse_views}")
        if self.feature_cache_gb < 0:
            raise ValueError(f"feature_cache_gb must be >= 0, got {self.feature_cache_gb}")
        if not 0.0 <= self.min_source_score <= 1.0:
            raise ValueError(f"min_source_score must be in [0, 1], got {self.min_source_score}")


def first_pass_size(
    image_size: tuple[int, int], processed_size: tuple[int, int], coarse_max_dim: int | None
) -> tuple[int, int] | None:
    """(width, height) of the scale cascade's first pass for images of ``image_size``
    processed at ``processed_size``, or None when the cascade is off or would not shrink them."""
    if coarse_max_dim is None or coarse_max_dim >= max(processed_size):
        return None
    return fit_size(*image_size, coarse_max_dim)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


class ResizedImages:
    """The scene's images resized for the network, keeping the most recently used ones.

    Each image is a source of several reference views, and the scale cascade reads it at
    two sizes; decoding a 1600x1200 JPEG and resizing it again every time cost more than
    the network's forward pass on a GPU. At most ``capacity`` resized images are kept
    (24 at 1600x1200 are about 140 MB).

    ``sizes`` are the (width, height) the run reads: a miss at any size decodes the image
    once and resizes it to all of them, and an image that another thread (the prefetch) is
    decoding is waited for, not decoded a second time.
    """

    def __init__(self, scene: Scene, capacity: int = 24, sizes: list[tuple[int, int]] | None = None,
                 prefetch_workers: int = 2):
        self.scene = scene
        self.capacity = capacity
        self.sizes = list(dict.fromkeys(sizes or []))
        self.prefetch_workers = prefetch_workers
        self._cache: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._decoding: dict[int, threading.Event] = {}  # view id -> set when its decode ends
        self._worker: ThreadPoolExecutor | None = None

    def get(self, view_id: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 RGB of ``view_id``, area-resized from the original."""
        key = (view_id, width, height)
        while True:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
                pending = self._decoding.get(view_id)
                if pending is None:
                    self._decoding[view_id] = done = threading.Event()
                    break
            pending.wait()  # another thread is decoding this image; its sizes may include ours
        try:
            original = self.scene.image(view_id)
            camera = self.scene.views[view_id].camera
            # The size asked for last, so that it is the most recent entry and outlives the others.
            sizes = [s for s in self.sizes if s != (width, height)] + [(width, height)]
            resized = {size: resize_view(original, camera, *size)[0] for size in sizes}
            with self._lock:
                for (w, h), image in resized.items():
                    self._cache[(view_id, w, h)] = image
                    self._cache.move_to_end((view_id, w, h))
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
        finally:
            with self._lock:
                del self._decoding[view_id]
            done.set()
        return resized[(width, height)]

    def prefetch(self, view_ids: list[int], sizes: list[tuple[int, int]]) -> list[Future]:
        """Load ``view_ids`` at each (width, height) of ``sizes`` in background threads.

        On a GPU this hides the next view's image decoding behind the current view's
        network pass (OpenCV releases the GIL while it decodes and resizes). Views already
        cached stay cached; the futures only report errors (a failed image fails again, with
        its message, when the network asks for it).
        """
        if self._worker is None:
            self._worker = ThreadPoolExecutor(max_workers=self.prefetch_workers, thread_name_prefix="mvs-images")
        return [self._worker.submit(self.get, v, w, h) for w, h in sizes for v in view_ids]


class FeatureCache:
    """The network's feature pyramid of each image at each size, the most recently used kept.

    Each image is a source of about ten reference views; on a CPU its feature pyramid at
    1600x1152 costs about 0.25 s, recomputed for every one of them. Neighbouring reference
    views share most sources, so a cache of about 16 images at that size (1.3 GB) leaves
    some 2.7 of the 11 views of each reference view to compute (DTU scan 24 and the
    synthetic scenes' pair lists). At most ``capacity_bytes`` of features are kept.
    """

    def __init__(self, capacity_bytes: int = 1_400_000_000):
        self.capacity_bytes = capacity_bytes
        self._cache: OrderedDict[tuple[int, int, int], list[torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self.computed = 0  # images whose features were computed (misses), for tests and profiling

    def pyramid(self, model: torch.nn.Module, view_ids: list[int], images: torch.Tensor) -> list[torch.Tensor]:
        """``model.image_features`` of ``images`` (V, 3, H, W), the images of ``view_ids``:
        [(V, C_k, h_k, w_k)] coarse to fine, computed only for images not already kept."""
        height, width = images.shape[-2:]
        keys = [(view, height, width) for view in view_ids]
        missing = [i for i, key in enumerate(keys) if key not in self._cache]
        fresh = {}
        if missing:
            levels = model.image_features(images[missing])  # [(M, C_k, h_k, w_k)]
            self.computed += len(missing)
            for j, i in enumerate(missing):
                fresh[keys[i]] = [level[j : j + 1].clone() for level in levels]  # own memory, not the batch's
        parts = [fresh.get(key) or self._cache[key] for key in keys]
        pyramid = [torch.cat([part[k] for part in parts]) for k in range(len(parts[0]))]
        for key in keys:
            if key in fresh:
                self._cache[key] = fresh[key]
                self._bytes += _nbytes(fresh[key])
            self._cache.move_to_end(key)
        while self._bytes > self.capacity_bytes and len(self._cache) > 1:
            _, evicted = self._cache.popitem(last=False)
            self._bytes -= _nbytes(evicted)
        return pyramid


def _nbytes(tensors: list[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def prepare_views(scene: Scene, view_ids: list[int], width: int, height: int, device: str,
                  images_cache: ResizedImages | None = None):
    """Images and cameras of ``view_ids`` resized to ``width`` x ``height``, as a batch of one.

    Args:
        images_cache: where to take (and keep) the resized images; None reads them afresh.

    Returns:
        images (1, V, 3, H, W) in [0, 1], intrinsics (1, V, 3, 3), extrinsics (1, V, 4, 4),
        and the resized reference image (H, W, 3) uint8.
    """
    images_cache = images_cache or ResizedImages(scene, capacity=0)
    images = [images_cache.get(vid, width, height) for vid in view_ids]
    cameras = [scene.views[vid].camera.resized(width, height) for vid in view_ids]
    batch = torch.from_numpy(np.stack(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)
    K, E = stack_cameras(cameras, device)
    return batch[None], K[None], E[None], images[0]


@torch.inference_mode()
def predict_view(
    model: torch.nn.Module,
    scene: Scene,
    reference: int,
    sources: list[int],
    width: int,
    height: int,
    device: str,
    coarse_size: tuple[int, int] | None = None,
    early_views: int | None = None,
    mixed_precision: bool = True,
    images_cache: ResizedImages | None = None,
    coarse_sources: list[int] | None = None,
    feature_cache: FeatureCache | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Depth (H, W), confidence (H, W) and the resized reference image for one view.

    With ``coarse_size`` (width, height), smaller than (``width``, ``height``), the whole
    network runs on the views resized to it first; its depth and confidence, upsampled,
    guide the last stage at full size (``guide`` of
    :class:`mvs.models.cascade.CascadeMVSNet`), the stages before it using the first
    ``early_views`` views (capped at the views given; None: all), or with ``early_views=0``
    seed the last stage alone (``initial_depth``). Without a first pass every stage uses
    every view. The first pass uses ``coarse_sources`` (None: ``sources``). The confidence
    is the last stage's.

    On CUDA the network runs under float16 autocast unless ``mixed_precision`` is False
    (float32 throughout: slower, for checking what half precision costs in accuracy). On
    the CPU it always runs in float32 and ``mixed_precision`` is ignored.

    ``images_cache`` (one per scene, shared by its views) spares decoding and resizing an
    image again for each view it is a source of; ``feature_cache`` (likewise; the model
    must have ``image_features``) spares computing its feature pyramid again.
    """
    view_ids = [reference] + sources
    images, K, E, ref_image = prepare_views(scene, view_ids, width, height, device, images_cache)
    camera = scene.views[reference].camera
    depth_min = torch.tensor([camera.depth_min], device=device)
    depth_max = torch.tensor([camera.depth_max], device=device)
    use_amp = mixed_precision and str(device).startswith("cuda")

    def run(ids: list[int], images: torch.Tensor, K: torch.Tensor, E: torch.Tensor, **options) -> dict:
        if feature_cache is not None:
            options["pyramid"] = feature_cache.pyramid(model, ids, images[0])
        return model(images, K, E, depth_min, depth_max, **options)

    with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
        options = {}
        if coarse_size is not None and coarse_size[0] < width:
            early = None if early_views is None else min(early_views, len(view_ids))
            coarse_ids = view_ids if coarse_sources is None else [reference] + coarse_sources
            coarse_images, coarse_K, coarse_E, _ = prepare_views(scene, coarse_ids, *coarse_size, device, images_cache)
            coarse = run(coarse_ids, coarse_images, coarse_K, coarse_E)
            coarse_depth, coarse_confidence = (
                F.interpolate(coarse[key].float()[:, None], size=(height, width), mode="bilinear",
                              align_corners=False)[:, 0]
                for key in ("depth", "confidence")
            )  # (1, H, W) each
            if early == 0:
                options = {"initial_depth": coarse_depth}
            else:
                options = {"guide": (coarse_depth, coarse_confidence), "early_views": early}
        out = run(view_ids, images, K, E, **options)
    depth = out["depth"][0].float().cpu().numpy()
    confidence = out["confidence"][0].float().cpu().numpy()
    return depth, confidence, ref_image


@dataclass
class ViewDepth:
    """The network's output for one reference view, at the processed resolution."""

    view: int  # reference view id
    sources: list[int]  # source view ids used, best first
    depth: np.ndarray  # (H, W) float32, scene units (mm for DTU), 0 = none
    confidence: np.ndarray  # (H, W) float32 in [0, 1]
    image: np.ndarray  # (H, W, 3) uint8, the resized reference image
    seconds: float  # wall time of the network for this view


class SceneReconstruction:
    """The steps of reconstructing a scene, in memory: depth maps view by view, then fusion.

    ``reconstruct_scene`` drives it and writes the files; the HTTP service
    (``mvs_serving.engine``) drives it to stream progress and keep everything in memory.
    Which views are references, which sources each uses and the processed size are decided
    here only.

    Attributes:
        references: views with at least one source in ``scene.pairs``, in view order.
        width, height: processed image size in pixels.
        coarse_size: (width, height) of the scale cascade's first pass, or None (one scale).
        depths, confidences: view id -> (H, W) map, filled in by ``depth_maps``.

    Raises:
        MVSInputError: no view has a source view (nothing to reconstruct).
    """

    def __init__(self, scene: Scene, model: torch.nn.Module, config: ReconstructConfig | None = None):
        self.scene = scene
        self.model = model
        self.config = config or ReconstructConfig()
        self.width, self.height = fit_size(*scene.image_size, self.config.max_dim)
        self.coarse_size = first_pass_size(scene.image_size, (self.width, self.height), self.config.coarse_max_dim)
        self.references = [v for v in scene.view_ids if scene.source_views(v)]
        if not self.references:
            raise MVSInputError("no view has source views in pair.txt; nothing to reconstruct", scene.root / "pair.txt")
        self.depths: dict[int, np.ndarray] = {}
        self.confidences: dict[int, np.ndarray] = {}
        # Room for the images of the view in hand and the next one (prefetched on a GPU) at
        # every size, with a margin; the first pass's sources include the full size's.
        coarse_views = (self.config.coarse_views or self.config.num_views) if self.coarse_size else 0
        sizes = [(self.width, self.height)] + ([self.coarse_size] if self.coarse_size else [])
        per_view = max(self.config.num_views, coarse_views) * len(sizes)
        self.images = ResizedImages(scene, capacity=max(24, 3 * per_view), sizes=sizes)
        on_cpu = str(self.config.device) == "cpu"
        self.features = (FeatureCache(int(self.config.feature_cache_gb * 1e9))
                         if on_cpu and self.config.feature_cache_gb > 0 and hasattr(model, "image_features") else None)

    def depth_maps(self) -> Iterator[ViewDepth]:
        """Run the network on every reference view in turn, yielding each result as it is done."""
        prefetch = str(self.config.device).startswith("cuda")  # on the CPU it would compete with the network
        for index, reference in enumerate(self.references):
            tick = time.perf_counter()
            sources, coarse_sources = self._sources(reference)
            if prefetch and index + 1 < len(self.references):
                following = self.references[index + 1]
                next_sources, next_coarse = self._sources(following)
                self.images.prefetch([following] + next_sources, [(self.width, self.height)])
                if self.coarse_size:
                    self.images.prefetch(next_coarse or [], [self.coarse_size])
            depth, confidence, image = predict_view(
                self.model, self.scene, reference, sources, self.width, self.height, self.config.device,
                self.coarse_size, self.config.early_views, self.config.mixed_precision, self.images, coarse_sources,
                self.features,
            )
            self.depths[reference], self.confidences[reference] = depth, confidence
            yield ViewDepth(reference, sources, depth, confidence, image, time.perf_counter() - tick)

    def _sources(self, reference: int) -> tuple[list[int], list[int] | None]:
        """Source views of ``reference`` at the processed size and in the first pass (None: the same)."""
        min_score = self.config.min_source_score
        sources = self.scene.source_views(reference, self.config.num_views - 1, min_score)
        if self.coarse_size is None or self.config.coarse_views is None:
            return sources, None
        return sources, self.scene.source_views(reference, self.config.coarse_views - 1, min_score)

    def fuse(self, progress: bool = False) -> FusedCloud:
        """Fuse the depth maps computed so far (run ``depth_maps`` to the end first)."""
        return fuse_depth_maps(
            self.scene, self.depths, self.confidences, self.config.fusion, device=self.config.device, progress=progress
        )


def read_depth_maps(recon_dir: str | Path, scene: Scene) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """The depth and confidence maps that :func:`reconstruct_scene` wrote into ``recon_dir``.

    Returns:
        depths: view id -> (H, W) float32 depth, for every view of ``scene`` with a
        ``depths/XXXXXXXX.pfm``; confidences: view id -> (H, W) float32, for those with a
        ``confidence/XXXXXXXX.pfm`` too (maps from elsewhere may come without).

    Raises:
        MVSInputError: ``recon_dir`` holds no depth map of any view of the scene.
    """
    recon_dir = Path(recon_dir)
    depths, confidences = {}, {}
    for view in scene.view_ids:
        path = recon_dir / "depths" / f"{view:08d}.pfm"
        if path.is_file():
            depths[view] = read_pfm(path)
            confidence = recon_dir / "confidence" / f"{view:08d}.pfm"
            if confidence.is_file():
                confidences[view] = read_pfm(confidence)
    if not depths:
        raise MVSInputError("no depth maps found (expected depths/00000000.pfm ...)", recon_dir)
    return depths, confidences


def reconstruct_scene(
    scene: Scene,
    model: torch.nn.Module,
    out_dir: str | Path,
    config: ReconstructConfig | None = None,
    progress: bool = True,
) -> dict:
    """Depth and confidence for every view of ``scene``, previews, and the fused cloud.

    Writes the files listed in the module docstring under ``out_dir`` and returns the
    summary also written to ``reconstruction.json``. For the maps and the cloud in memory,
    or progress view by view, use ``SceneReconstruction`` directly.
    """
    config = config or ReconstructConfig()
    out = Path(out_dir)
    for sub in ("depths", "confidence") + (("preview",) if config.previews else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    run = SceneReconstruction(scene, model, config)

    start = time.perf_counter()
    view_seconds = []
    for view in tqdm(run.depth_maps(), desc="depth maps", unit="view", total=len(run.references), disable=not progress):
        ref = view.view
        view_seconds.append(view.seconds)
        write_pfm(out / "depths" / f"{ref:08d}.pfm", view.depth)
        write_pfm(out / "confidence" / f"{ref:08d}.pfm", view.confidence)
        if config.previews:
            save_depth_preview(
                str(out / "preview" / f"{ref:08d}.png"), view.depth, view.confidence, image=view.image,
                depth_range=(scene.views[ref].camera.depth_min, scene.views[ref].camera.depth_max),
                title=f"{scene.name} view {ref}",
            )
    summary = {
        "scene": str(scene.root),
        "views": len(run.references),
        "processed_size": [run.width, run.height],
        "coarse_size": None if run.coarse_size is None else list(run.coarse_size),
        "seconds_per_view": float(np.mean(view_seconds)),
        "depth_seconds": time.perf_counter() - start,
        "config": asdict(config),
    }
    if config.fuse:
        tick = time.perf_counter()
        cloud = run.fuse(progress=progress)
        cloud.write_ply(out / "fused.ply", source_view=config.fusion.ply_source_view)
        (out / "fused.json").write_text(json.dumps(cloud.stats_dict(), indent=2))
        summary["fused_points"] = int(len(cloud.points))
        summary["fusion_seconds"] = time.perf_counter() - tick
    summary["peak_rss_gb"] = peak_rss_gb()
    (out / "reconstruction.json").write_text(json.dumps(summary, indent=2))
    return summary
