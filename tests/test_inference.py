"""mvs.inference settings: the scale cascade's configuration and first-pass size, and the
precision switch (float16 autocast or float32 on CUDA; no effect on the CPU), and the
cache of resized images shared by the views of a scene."""

import json
import threading
import time

import numpy as np
import pytest
import torch

from mvs.checkpoint import load_model
from mvs.cli import build_parser
from mvs.cli import main as mvs_main
from mvs.data.dataset import resize_view
from mvs.data.scene import load_scene
from mvs.inference import (
    ReconstructConfig,
    ResizedImages,
    SceneReconstruction,
    first_pass_size,
    predict_view,
    reconstruct_scene,
)
from mvs.io import read_pfm, write_pair
from tests.conftest import make_plane_scene


def test_config_refuses_too_few_views_and_a_tiny_first_pass():
    with pytest.raises(ValueError, match="early_views"):
        ReconstructConfig(coarse_max_dim=640, early_views=1)
    with pytest.raises(ValueError, match="early_views"):
        ReconstructConfig(early_views=-1)
    with pytest.raises(ValueError, match="num_views"):
        ReconstructConfig(num_views=1)
    with pytest.raises(ValueError, match="coarse_max_dim"):
        ReconstructConfig(coarse_max_dim=8)
    ReconstructConfig(coarse_max_dim=640, early_views=0)  # the last stage alone: allowed


def test_first_pass_size_only_when_it_shrinks_the_processed_images():
    assert first_pass_size((1600, 1200), (1600, 1200), 640) == (640, 480)
    assert first_pass_size((1600, 1200), (800, 600), 640) == (640, 480)  # from the original size
    assert first_pass_size((1600, 1200), (640, 480), 640) is None  # nothing to gain
    assert first_pass_size((1600, 1200), (1600, 1200), None) is None


def test_mixed_precision_is_ignored_on_the_cpu(tmp_path):
    make_plane_scene(tmp_path / "scene", views=3)
    scene = load_scene(tmp_path / "scene")
    model, _ = load_model()
    width, height = scene.image_size
    mixed, full = (predict_view(model, scene, 0, [1, 2], width, height, "cpu", mixed_precision=mixed_precision)
                   for mixed_precision in (True, False))
    for a, b in zip(mixed, full, strict=True):  # depth, confidence, image
        np.testing.assert_array_equal(a, b)


def test_reconstruct_fp32_flag_turns_mixed_precision_off(tmp_path):
    assert ReconstructConfig().mixed_precision  # float16 autocast on CUDA by default
    scene = tmp_path / "scene"
    make_plane_scene(scene, views=3)
    assert build_parser().parse_args(["reconstruct", str(scene), "--out", str(tmp_path), "--fp32"]).fp32
    maps = {}
    for fp32 in (False, True):
        out = tmp_path / f"fp32_{fp32}"
        assert mvs_main(["reconstruct", str(scene), "--out", str(out), "--num-views", "3", "--no-fuse", "--no-previews"]
                        + (["--fp32"] if fp32 else [])) == 0
        summary = json.loads((out / "reconstruction.json").read_text())
        assert summary["config"]["mixed_precision"] is (not fp32)
        maps[fp32] = [read_pfm(out / sub / f"{view:08d}.pfm") for sub in ("depths", "confidence") for view in range(3)]
    for a, b in zip(maps[False], maps[True], strict=True):  # on the CPU the flag changes nothing
        np.testing.assert_array_equal(a, b)


def test_resized_images_match_a_fresh_resize_and_keep_only_the_most_recent(tmp_path, monkeypatch):
    make_plane_scene(tmp_path / "scene", views=4)
    scene = load_scene(tmp_path / "scene")
    reads = []
    original = type(scene).image
    monkeypatch.setattr(type(scene), "image", lambda self, v: reads.append(v) or original(self, v))
    cache = ResizedImages(scene, capacity=2)
    small = cache.get(0, 40, 32)
    expected, _, _ = resize_view(original(scene, 0), scene.views[0].camera, 40, 32)
    np.testing.assert_array_equal(small, expected)
    assert cache.get(0, 40, 32) is small and reads == [0]  # a hit decodes nothing
    cache.get(0, 20, 16)  # another size is another entry
    cache.get(1, 40, 32)  # evicts the least recently used: (0, 40, 32)
    assert reads == [0, 0, 1]
    cache.get(0, 20, 16)
    assert reads == [0, 0, 1]
    cache.get(0, 40, 32)
    assert reads == [0, 0, 1, 0]


def test_resized_images_decode_once_for_every_size_and_thread(tmp_path, monkeypatch):
    make_plane_scene(tmp_path / "scene", views=4)
    scene = load_scene(tmp_path / "scene")
    reads, started = [], threading.Event()
    original = type(scene).image

    def slow_image(self, view):
        reads.append(view)
        started.set()
        time.sleep(0.2)  # long enough for the second reader to arrive mid-decode
        return original(self, view)

    monkeypatch.setattr(type(scene), "image", slow_image)
    cache = ResizedImages(scene, capacity=8, sizes=[(40, 32), (20, 16)])
    small = cache.get(1, 20, 16)
    assert reads == [1]
    large = cache.get(1, 40, 32)  # resized from the same decode
    assert reads == [1]
    for size, image in (((40, 32), large), ((20, 16), small)):
        expected, _, _ = resize_view(original(scene, 1), scene.views[1].camera, *size)
        np.testing.assert_array_equal(image, expected)

    # The prefetch and the network asking for the same image at once: one decode.
    started.clear()
    futures = cache.prefetch([2], [(40, 32)])
    assert started.wait(5)  # the prefetch thread is decoding view 2 now
    from_main = cache.get(2, 20, 16)
    assert [f.result() for f in futures][0].shape == (32, 40, 3)
    assert from_main.shape == (16, 20, 3) and reads == [1, 2]


def test_predict_view_gives_the_same_maps_with_and_without_the_cache(tmp_path):
    make_plane_scene(tmp_path / "scene", views=3)
    scene = load_scene(tmp_path / "scene")
    model, _ = load_model()
    width, height = scene.image_size
    fresh = predict_view(model, scene, 0, [1, 2], width, height, "cpu")
    cache = ResizedImages(scene)
    for _ in range(2):  # the second call reads every image from the cache
        cached = predict_view(model, scene, 0, [1, 2], width, height, "cpu", images_cache=cache)
        for a, b in zip(fresh, cached, strict=True):
            np.testing.assert_array_equal(a, b)


class _ViewCounter(torch.nn.Module):
    """The shipped network, recording how many views each call was given."""

    def __init__(self, model):
        super().__init__()
        self.model, self.views = model, []

    def forward(self, images, *args, **kwargs):
        self.views.append(images.shape[1])
        return self.model(images, *args, **kwargs)


def test_the_first_pass_takes_its_own_number_of_views(tmp_path):
    with pytest.raises(ValueError, match="coarse_views"):
        ReconstructConfig(coarse_views=1)
    assert ReconstructConfig().coarse_views == 11  # the reference and all ten pair.txt sources
    make_plane_scene(tmp_path / "scene", views=5, width=96, height=64)
    scene = load_scene(tmp_path / "scene")
    model, _ = load_model()
    counter = _ViewCounter(model)
    depth, confidence, _ = predict_view(counter, scene, 0, [1], 96, 64, "cpu", coarse_size=(48, 32),
                                        coarse_sources=[1, 2, 3])
    assert counter.views == [4, 2] and depth.shape == confidence.shape == (64, 96)
    counter.views.clear()
    config = ReconstructConfig(coarse_max_dim=48, num_views=2, coarse_views=4, fuse=False, previews=False)
    summary = reconstruct_scene(scene, counter, tmp_path / "out", config)
    assert counter.views == [4, 2] * 5  # first pass, then the processed size, for each of the 5 views
    assert summary["config"]["coarse_views"] == 4
    counter.views.clear()
    reconstruct_scene(scene, counter, tmp_path / "same", ReconstructConfig(
        coarse_max_dim=48, num_views=2, coarse_views=None, fuse=False, previews=False))
    assert counter.views == [2, 2] * 5  # None: the first pass takes num_views too


def test_sources_scored_far_below_the_best_are_not_used(tmp_path):
    with pytest.raises(ValueError, match="min_source_score"):
        ReconstructConfig(min_source_score=1.5)
    make_plane_scene(tmp_path / "scene", views=5, width=64, height=48)
    # View 0 has two real neighbours; the others keep their whole lists.
    pairs = {v: [(s, 1.0) for s in range(5) if s != v] for v in range(5)}
    pairs[0] = [(1, 200.0), (2, 150.0), (3, 1.0), (4, 0.5)]
    write_pair(tmp_path / "scene" / "pair.txt", pairs)
    scene = load_scene(tmp_path / "scene")
    model, _ = load_model()
    counter = _ViewCounter(model)
    options = dict(coarse_max_dim=None, num_views=5, fuse=False, previews=False)
    reconstruct_scene(scene, counter, tmp_path / "out", ReconstructConfig(**options), progress=False)
    assert counter.views == [3, 5, 5, 5, 5]
    counter.views.clear()
    reconstruct_scene(scene, counter, tmp_path / "all", ReconstructConfig(min_source_score=0.0, **options),
                      progress=False)
    assert counter.views == [5] * 5
    assert mvs_main(["reconstruct", str(tmp_path / "scene"), "--out", str(tmp_path / "cli"), "--min-source-score", "0",
                     "--coarse-max-dim", "0", "--no-fuse", "--no-previews"]) == 0
    assert json.loads((tmp_path / "cli" / "reconstruction.json").read_text())["config"]["min_source_score"] == 0.0
    assert mvs_main(["reconstruct", str(tmp_path / "scene"), "--out", str(tmp_path / "bad"),
                     "--min-source-score", "1.5"]) == 2


def test_feature_pyramids_kept_across_views_give_the_same_depth_maps(tmp_path):
    make_plane_scene(tmp_path / "scene", views=6, width=96, height=64)
    scene = load_scene(tmp_path / "scene")
    model, _ = load_model()
    options = dict(coarse_max_dim=48, num_views=4, coarse_views=5, fuse=False, previews=False)
    kept = SceneReconstruction(scene, model, ReconstructConfig(**options))
    fresh = SceneReconstruction(scene, model, ReconstructConfig(feature_cache_gb=0, **options))
    assert fresh.features is None
    for a, b in zip(kept.depth_maps(), fresh.depth_maps(), strict=True):
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-5)
        np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-5)
    # 6 views at two sizes, each image's pyramid computed once per size (all fit in the cache)
    # instead of (5 + 4) times per reference view.
    assert kept.features.computed == 12
    tiny = SceneReconstruction(scene, model, ReconstructConfig(feature_cache_gb=1e-9, **options))
    for _ in tiny.depth_maps():
        pass
    assert tiny.features.computed == 6 * (5 + 4)  # room for nothing: every pyramid computed again
    with pytest.raises(ValueError, match="feature_cache_gb"):
        ReconstructConfig(feature_cache_gb=-1)


def test_coarse_views_option_reaches_the_reconstruction(tmp_path):
    scene = tmp_path / "scene"
    make_plane_scene(scene, views=3)
    assert mvs_main(["reconstruct", str(scene), "--out", str(tmp_path / "out"), "--coarse-views", "3",
                     "--no-fuse", "--no-previews"]) == 0
    assert json.loads((tmp_path / "out" / "reconstruction.json").read_text())["config"]["coarse_views"] == 3
    assert mvs_main(["reconstruct", str(scene), "--out", str(tmp_path / "bad"), "--coarse-views", "1"]) == 2
