import numpy as np

from mvs.cameras import Camera, look_at
from mvs.visualize import colorize, render_point_cloud


def test_render_point_cloud_nearest_point_wins():
    K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
    camera = Camera(K, look_at(np.array([0.0, 0.0, 100.0]), np.zeros(3), up=np.array([0.0, 1.0, 0.0])), 32, 24, 1, 1000)
    # Two points on the optical axis (the same pixel) and one behind the camera.
    points = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 50.0], [0.0, 0.0, 200.0], [30.0, 0.0, 0.0]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    image = render_point_cloud(points, colors, camera)
    u, v = np.round(K[0, 2]).astype(int), np.round(K[1, 2]).astype(int)
    assert image[v, u].tolist() == [0, 255, 0]  # the nearer point (z = 50 from the camera)
    # The off-axis point lands 15 px to one side; everything else is background.
    drawn = np.argwhere((image != 255).any(axis=2))
    assert len(drawn) == 2
    assert not (image == [0, 0, 255]).all(axis=2).any()  # behind the camera: not drawn
    assert render_point_cloud(np.zeros((0, 3)), None, camera).min() == 255


def test_colorize_marks_invalid_pixels():
    values = np.array([[1.0, 2.0], [3.0, np.nan]])
    rgb = colorize(values, background=(1, 2, 3))
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[1, 1].tolist() == [1, 2, 3]
