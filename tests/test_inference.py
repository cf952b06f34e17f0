"""mvs.inference settings: the scale cascade's configuration and first-pass size."""

import pytest

from mvs.inference import ReconstructConfig, first_pass_size


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
