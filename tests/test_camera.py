import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rlkit import camera as cm


def test_unify_focal_hand_computed():
    cam = cm.Camera(fx=500.0, fy=400.0, cx=319.5, cy=239.5, width=640, height=480)
    r = cm.unify_focal(cam, 1000.0)
    assert (r.width, r.height) == (1280, 1200)
    assert (r.sx, r.sy) == (2.0, 2.5)
    # pixel centers: (0, 0) -> (0.5, 0.75); last pixel (639, 479) -> (1278.5, 1198.25)
    np.testing.assert_allclose(cm.resize_points([[0, 0], [639, 479]], r), [[0.5, 0.75], [1278.5, 1198.25]])
    new = cm.resize_camera(cam, r)
    assert (new.fx, new.fy) == (1000.0, 1000.0)
    assert (new.cx, new.cy) == (639.5, 599.5)  # the image center stays the center


def test_unify_focal_rounds_size_and_keeps_exact_scale():
    cam = cm.Camera(fx=333.0, fy=333.0, cx=50, cy=50, width=101, height=99)
    r = cm.unify_focal(cam, 100.0)
    assert (r.width, r.height) == (30, 30)  # 101 * 100/333 = 30.33, 99 * 100/333 = 29.73
    assert r.sx == 30 / 101 and r.sy == 30 / 99


def test_crop_hand_computed():
    cam = cm.Camera(1000, 1000, 639.5, 599.5, 1280, 1200)
    c = cm.Crop(100, 200, 1000, 700)
    new = cm.crop_camera(cam, c)
    assert (new.cx, new.cy, new.width, new.height) == (539.5, 399.5, 1000, 700)


def test_crop_size_clipped_to_small_images():
    rng = np.random.default_rng(0)
    for _ in range(50):
        w, h = cm.sample_crop_size(rng, 900, 2000, (1000, 1400), (700, 1200))
        assert w == 900 and 700 <= h <= 1200


@settings(max_examples=200, deadline=None)
@given(fx=st.floats(20, 3000), fy_ratio=st.floats(0.7, 1.4), w=st.integers(16, 2000), h=st.integers(16, 2000),
       f_uni=st.floats(50, 2000), u=st.floats(0, 1), v=st.floats(0, 1), x0=st.integers(0, 500), y0=st.integers(0, 500))
def test_transform_keeps_rays_exact(fx, fy_ratio, w, h, f_uni, u, v, x0, y0):
    cam = cm.Camera(fx, fx * fy_ratio, w * 0.47, h * 0.52, w, h)
    pts = np.array([[u * (w - 1), v * (h - 1)]])
    r = cm.unify_focal(cam, f_uni)
    crop = cm.Crop(x0, y0, 10, 10)
    new_cam = cm.crop_camera(cm.resize_camera(cam, r), crop)
    new_pts = cm.resize_points(pts, r) - [crop.x0, crop.y0]  # a crop shifts pixels by its corner
    np.testing.assert_allclose(cm.ray_directions(new_cam, new_pts), cm.ray_directions(cam, pts), atol=1e-9)
