"""Each camera convention is one transform object: its vectorized form over many cameras (the eval selection, the
size checks) equals its per-camera form (training samples, rendering), pixel for pixel, on random cameras that
include non-square pixels (the official convention undistorts those with OpenCV)."""

import numpy as np
import pytest

from rlkit import camera as cm


def random_cameras(n: int, seed: int, square: bool) -> cm.Cameras:
    rng = np.random.default_rng(seed)
    w, h = rng.integers(40, 900, n), rng.integers(30, 700, n)
    fx = rng.uniform(20.0, 1500.0, n)
    fy = fx if square else fx * rng.choice([1.0, 1.0, 1.07, 0.93], n)
    return cm.Cameras(fx, fy, rng.uniform(0.3, 0.7, n) * w, rng.uniform(0.3, 0.7, n) * h, w, h)


# the official convention always unifies the focal length (CameraOptions refuses it otherwise)
@pytest.mark.parametrize("convention, unify", [("exact", True), ("exact", False), ("official", True)])
@pytest.mark.parametrize("f_uni", [50.0, 137.5, 1000.0])
def test_the_vectorized_form_equals_the_per_camera_form(convention, unify, f_uni):
    cams = random_cameras(300, seed=int(f_uni), square=False)
    rng = np.random.default_rng(1)
    u = rng.uniform(-0.5, 1.0, len(cams)) * cams.width  # some pixels fall outside the image
    v = rng.uniform(0.0, 1.0, len(cams)) * cams.height
    x, y, w, h = cm.CONVENTIONS[convention].batch(cams, f_uni, unify, u, v)
    for i in range(len(cams)):
        t = cm.transform(cams.camera(i), f_uni, convention, unify)
        assert (int(x[i]), int(y[i])) == t.point(u[i], v[i]), i
        assert (int(w[i]), int(h[i])) == (t.size.width, t.size.height) == (t.camera.width, t.camera.height), i


def test_exact_keeps_rays_and_official_truncates():
    """Hand-computed: a 100x80 camera (f 200, c (50, 40)) resized to f 50, a quarter. Exact: u' = (u + 0.5) / 4 -
    0.5, rounded: 10 -> 2.125 -> 2, 13 -> 2.875 -> 3, 1 -> -0.125 -> 0. Official: u' = int((u - c) / 4 + c / 4):
    10 -> 2.5 -> 2, 13 -> 3.25 -> 3, y 1 -> 0.25 -> 0. Both sizes 100 / 4 x 80 / 4."""
    cam = cm.Camera(200.0, 200.0, 50.0, 40.0, 100, 80)
    exact, official = cm.transform(cam, 50.0, "exact"), cm.transform(cam, 50.0, "official")
    assert exact.points(np.array([[10.0, 10.0], [13.0, 1.0]])).tolist() == [[2, 2], [3, 0]]
    assert official.points(np.array([[10.0, 10.0], [13.0, 1.0]])).tolist() == [[2, 2], [3, 0]]
    assert (exact.size.width, exact.size.height) == (official.size.width, official.size.height) == (25, 20)
    assert exact.camera.cx == pytest.approx((50.0 + 0.5) / 4 - 0.5) and official.camera.cx == pytest.approx(12.5)
