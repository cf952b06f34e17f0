"""Scale merging in mvs.inference: which pass each pixel's depth comes from."""

import numpy as np
import pytest

from mvs.inference import ReconstructConfig, first_pass_size, last_window_margin, merge_scales
from mvs.models import CascadeMVSNet, ModelConfig


def test_merge_keeps_the_cascade_except_confident_nearer_thin_parts():
    cascade_depth = np.full((2, 3), 700.0, np.float32)
    cascade_conf = np.full((2, 3), 0.9, np.float32)
    one_depth = np.array([[650.0, 650.0, 695.0], [750.0, 650.0, 700.0]], np.float32)
    one_conf = np.array([[0.99, 0.5, 0.99], [0.99, 0.91, 0.99]], np.float32)
    depth, confidence, pick = merge_scales((one_depth, one_conf), (cascade_depth, cascade_conf), margin=10.0)
    # chosen: nearer by more than the margin AND more confident
    expected = np.array([[True, False, False], [False, True, False]])
    np.testing.assert_array_equal(pick, expected)
    np.testing.assert_array_equal(depth, np.where(expected, one_depth, cascade_depth))
    np.testing.assert_array_equal(confidence, np.where(expected, one_conf, cascade_conf))
    assert depth.dtype == np.float32 and confidence.dtype == np.float32


def test_last_window_margin_is_half_the_last_stage_window():
    model = CascadeMVSNet(ModelConfig())  # 48/32/8 hypotheses, ratios 4/2/1: final interval range/192
    assert last_window_margin(model, 500.0, 980.0) == pytest.approx(4 * 480.0 / 192)
    model = CascadeMVSNet(ModelConfig(hypotheses=(16, 8, 6), interval_ratios=(2.0, 1.0, 0.5)))
    assert last_window_margin(model, 1.0, 3.0) == pytest.approx(3 * (2.0 / 32) * 0.5)


def test_config_refuses_too_few_one_scale_views_and_tiny_first_pass():
    with pytest.raises(ValueError, match="one_scale_views"):
        ReconstructConfig(coarse_max_dim=640, one_scale_views=1)
    with pytest.raises(ValueError, match="one_scale_views needs coarse_max_dim"):
        ReconstructConfig(one_scale_views=5)
    with pytest.raises(ValueError, match="coarse_max_dim"):
        ReconstructConfig(coarse_max_dim=8)


def test_first_pass_size_only_when_it_shrinks_the_processed_images():
    assert first_pass_size((1600, 1200), (1600, 1200), 640) == (640, 480)
    assert first_pass_size((1600, 1200), (800, 600), 640) == (640, 480)  # from the original size
    assert first_pass_size((1600, 1200), (640, 480), 640) is None  # nothing to gain
    assert first_pass_size((1600, 1200), (1600, 1200), None) is None
