import numpy as np
import pytest
import torch

from mvs.cameras import Camera
from mvs.data.dataset import MVSDataset, SampleConfig, fit_size, load_groups, split_groups
from mvs.errors import MVSInputError
from tests.conftest import make_plane_scene, plane_depth


def sample_camera(sample, k=0):
    h, w = sample["depth"].shape
    return Camera(sample["intrinsics"][k].double().numpy(), sample["extrinsics"][k].double().numpy(), w, h, 1, 2)


@pytest.mark.parametrize("config", [
    SampleConfig(num_views=3),
    SampleConfig(num_views=3, max_dim=40, multiple=8),
    SampleConfig(num_views=4, crop=(32, 24), augment=True),
])
def test_sample_camera_and_depth_stay_consistent(tmp_path, config):
    make_plane_scene(tmp_path, views=5, width=64, height=48)
    dataset = MVSDataset(load_groups(tmp_path), config, seed=3)
    sample = dataset[1]
    V = config.num_views
    h, w = sample["depth"].shape
    assert sample["images"].shape == (V, 3, h, w)
    assert sample["intrinsics"].shape == (V, 3, 3) and sample["extrinsics"].shape == (V, 4, 4)
    assert 0 <= sample["images"].min() and sample["images"].max() <= 1
    if config.multiple > 1:
        assert h % config.multiple == 0 and w % config.multiple == 0
    # The sample's reference camera must predict its GT depth (plane z = 0).
    expected = plane_depth(sample_camera(sample), np.array([0.0, 0.0, 1.0]), 0.0)
    depth = sample["depth"].numpy()
    valid = sample["mask"].numpy()
    assert valid.mean() > 0.9
    tolerance = 0.5 if config.max_dim is None else 3.0  # nearest resampling moves samples < 1 px
    assert np.abs(depth - expected)[valid].max() < tolerance
    assert sample["depth_min"] < depth[valid].min() and depth[valid].max() < sample["depth_max"]


def test_augmentation_is_deterministic_per_seed_and_epoch(tmp_path):
    make_plane_scene(tmp_path, views=5)
    groups = load_groups(tmp_path)
    config = SampleConfig(num_views=3, augment=True, crop=(32, 24))
    a, b = MVSDataset(groups, config, seed=1), MVSDataset(groups, config, seed=1)
    torch.testing.assert_close(a[2]["images"], b[2]["images"])
    b.set_epoch(1)
    assert not torch.equal(a[2]["images"], b[2]["images"])


def test_too_few_sources_are_repeated(tmp_path):
    make_plane_scene(tmp_path, views=2)
    sample = MVSDataset(load_groups(tmp_path), SampleConfig(num_views=4))[0]
    assert sample["images"].shape[0] == 4
    torch.testing.assert_close(sample["extrinsics"][1], sample["extrinsics"][2])


def test_folder_of_scenes_and_split(tmp_path):
    for k in range(3):
        make_plane_scene(tmp_path / f"scene_{k:03d}", views=3, seed=k)
    groups = load_groups(tmp_path)
    assert len(groups) == 3
    train, val = split_groups(groups, 0.2)
    assert len(train) == 2 and len(val) == 1


def test_errors(tmp_path):
    with pytest.raises(MVSInputError, match="not found"):
        load_groups(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MVSInputError, match="no scenes found"):
        load_groups(tmp_path / "empty")
    make_plane_scene(tmp_path / "nogt", views=2)
    for p in (tmp_path / "nogt" / "depths").iterdir():
        p.unlink()
    with pytest.raises(MVSInputError, match="ground-truth depth"):
        MVSDataset(load_groups(tmp_path / "nogt"))


def test_fit_size():
    assert fit_size(1600, 1200, 640, 32) == (640, 480)
    assert fit_size(640, 480, None, 32) == (640, 480)
    assert fit_size(100, 75, 1000, 8) == (96, 72)
