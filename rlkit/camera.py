"""Camera math: pinhole intrinsics, focal-length unification, crops, ray directions.

Pixel convention (used everywhere in rlkit): integer pixel coordinates name pixel
*centers*; pixel (0, 0) covers the square [-0.5, 0.5) x [-0.5, 0.5). This is the
OpenCV convention that DepthLMBench intrinsics use, so the ray of pixel (u, v) is
((u - cx) / fx, (v - cy) / fy, 1).

Under a resize by s (new size = old size * s) a point therefore maps as
u' = (u + 0.5) * s - 0.5 and the intrinsics as fx' = fx * s, cx' = (cx + 0.5) * s - 0.5,
which keeps every ray exactly. A crop at offset (x0, y0) maps u' = u - x0, cx' = cx - x0.

``official_transform`` is the official DepthLM code's own transform instead (int() sizes and
pixels, no half-pixel shift, OpenCV undistortion when fx != fy), for ``camera.resize: official``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Camera:
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def as_list(self) -> list[float]:
        return [self.fx, self.fy, self.cx, self.cy, self.width, self.height]


@dataclass(frozen=True)
class Resize:
    """A resize of a whole image; sx, sy are the exact scales new/old size."""

    width: int
    height: int
    sx: float
    sy: float


@dataclass(frozen=True)
class Crop:
    x0: int
    y0: int
    width: int
    height: int


def unify_focal(cam: Camera, f_uni: float) -> Resize:
    """The resize that gives the camera focal length f_uni (W' = W*f_uni/fx, H' = H*f_uni/fy).

    Sizes are rounded to whole pixels; the returned scales are the exact ones of the
    rounded size, so coordinates map exactly and fx' = fx*sx is f_uni to within half a pixel.
    """
    width = max(1, int(round(cam.width * f_uni / cam.fx)))
    height = max(1, int(round(cam.height * f_uni / cam.fy)))
    return Resize(width, height, width / cam.width, height / cam.height)


def identity_resize(cam: Camera) -> Resize:
    return Resize(cam.width, cam.height, 1.0, 1.0)


def resize_camera(cam: Camera, r: Resize) -> Camera:
    return Camera(
        cam.fx * r.sx,
        cam.fy * r.sy,
        (cam.cx + 0.5) * r.sx - 0.5,
        (cam.cy + 0.5) * r.sy - 0.5,
        r.width,
        r.height,
    )


def resize_points(points: np.ndarray, r: Resize) -> np.ndarray:
    """Map (N, 2) pixel coordinates (x, y) through a resize (pixel-center convention)."""
    points = np.asarray(points, dtype=np.float64)
    return (points + 0.5) * np.array([r.sx, r.sy]) - 0.5


def stretch_height(r: Resize, height: int) -> Resize:
    """The resize followed by a resize of the height alone to ``height`` rows (the official Taskonomy aspect jitter)."""
    return Resize(r.width, height, r.sx, r.sy * height / r.height)


def crop_camera(cam: Camera, c: Crop) -> Camera:
    return Camera(cam.fx, cam.fy, cam.cx - c.x0, cam.cy - c.y0, c.width, c.height)


def _sample_size(rng: np.random.Generator, lo: int, hi: int, limit: int, multiple_of: int) -> int:
    m = multiple_of
    if m > 1:  # uniform over the multiples of m inside [lo, hi] (the nearest one if there is none)
        first = -(-lo // m) * m
        size = int(rng.choice(np.arange(first, hi + 1, m))) if first <= hi else max(m, round(lo / m) * m)
        return size if size <= limit else (limit - limit % m if limit >= m else limit)
    return min(int(rng.integers(lo, hi + 1)), limit)


def sample_crop_size(rng: np.random.Generator, width: int, height: int, width_range: tuple[int, int],
                     height_range: tuple[int, int], multiple_of: int = 1) -> tuple[int, int]:
    """Crop size drawn uniformly from the ranges (only multiples of ``multiple_of``), never larger
    than the image: a smaller image is kept whole (rounded down to the multiple)."""
    return (_sample_size(rng, width_range[0], width_range[1], width, multiple_of),
            _sample_size(rng, height_range[0], height_range[1], height, multiple_of))


def center_crop(rng: np.random.Generator, width: int, height: int, width_range: tuple[int, int],
                height_range: tuple[int, int], multiple_of: int = 1) -> Crop:
    """The official code's train crop: each side int(min(side, uniform(lo, hi))) (rounded down to a multiple of
    ``multiple_of``), centered at ((W - w) // 2, (H - h) // 2)."""
    def side(limit: int, lo: int, hi: int) -> int:
        size = int(min(limit, rng.uniform(lo, hi)))
        return size - size % multiple_of if size >= multiple_of else size

    cw, ch = side(width, *width_range), side(height, *height_range)
    return Crop(max(0, (width - cw) // 2), max(0, (height - ch) // 2), cw, ch)


def ray_directions(cam: Camera, points: np.ndarray) -> np.ndarray:
    """Unit viewing rays (camera frame: x right, y down, z forward) of (N, 2) pixel coordinates."""
    points = np.asarray(points, dtype=np.float64)
    d = np.stack([(points[:, 0] - cam.cx) / cam.fx, (points[:, 1] - cam.cy) / cam.fy,
                  np.ones(len(points))], axis=1)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def ray_angles(cam: Camera, x: float, y: float) -> tuple[float, float]:
    """(degrees to the right, degrees below) of the optical axis for pixel (x, y)."""
    right = np.degrees(np.arctan2(x - cam.cx, cam.fx))
    below = np.degrees(np.arctan2(y - cam.cy, cam.fy))
    return float(right), float(below)


# ---------------------------------------------------------------- the official DepthLM code's transform

OFFICIAL_FXFY_TOLERANCE = 1e-3  # |fx - fy| above this: the official code undistorts first


@dataclass(frozen=True)
class OfficialTransform:
    """The camera transform of the official DepthLM code (facebookresearch/DepthLM_Official,
    utils/datasets.py), reproduced to the pixel so that a model trained with it (the released
    facebook/DepthLM) sees its own inputs. It differs from ``unify_focal`` on purpose:

    1. when |fx - fy| > 1e-3, OpenCV undistorts the image with zero distortion into the camera matrix of
       ``cv2.getOptimalNewCameraMatrix(alpha=1)`` (with zero distortion that matrix is the same one up to
       float rounding, so the pixels stay non-square);
    2. both axes are resized by s = f_uni / fx (fx after step 1) to int(W s) x int(H s) pixels with PIL's
       default filter (bicubic), so fy' = fy s is not f_uni when fx != fy;
    3. pixel (u, v) maps to (int((u - cx) fx' / fx + cx'), int((v - cy) fy' / fy + cy')), where fx', cx', ...
       are the intrinsics after the resize, fx' = fx s and cx' = cx s (no half-pixel shift), and int()
       truncates toward zero.

    ``camera`` holds those intrinsics and the resized size, as the official code reports them. ``stretched``
    (Taskonomy's aspect jitter, ``stretch``): after step 2 the image is resized again to another height, with fy
    and cy scaled by new / old height; ``camera`` is then the stretched one and ``focal_size`` the size before it.
    """

    source: Camera  # the record's camera
    undistorted: Camera | None  # the camera matrix after step 1 (same size); None when step 1 is skipped
    camera: Camera  # after step 2 (and the stretch)
    focal_size: tuple[int, int] | None = None  # the size after step 2 when a stretch follows it

    def stretch(self, height: int) -> OfficialTransform:
        """The official Taskonomy aspect jitter: the focal-resized image resized to ``height`` rows."""
        c = self.camera
        k = height / c.height
        return OfficialTransform(self.source, self.undistorted, Camera(c.fx, c.fy * k, c.cx, c.cy * k, c.width, height),
                                 (c.width, c.height))

    def point(self, u: float, v: float) -> tuple[int, int]:
        src, new = self.source, self.camera
        return int((u - src.cx) * (new.fx / src.fx) + new.cx), int((v - src.cy) * (new.fy / src.fy) + new.cy)

    def resize(self) -> Resize:
        """The size after step 2 (the scales are new/old size, for callers that read them)."""
        w, h = self.camera.width, self.camera.height
        return Resize(w, h, w / self.source.width, h / self.source.height)

    def image(self, img: Image.Image) -> Image.Image:
        """Steps 1 and 2 on the record's whole image (a new image; ``img`` is left as it is)."""
        if self.undistorted is not None:
            a, b = _camera_matrix(self.source), _camera_matrix(self.undistorted)
            img = Image.fromarray(_cv2().undistort(np.asarray(img), a, np.zeros((4, 1)), None, b))
        # Image.resize's default for RGB images since Pillow 7 (what the official code's bare resize() used)
        if self.focal_size is not None:
            img = img.resize(self.focal_size, Image.BICUBIC)
        return img.resize((self.camera.width, self.camera.height), Image.BICUBIC)


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError("camera.resize 'official' needs OpenCV to undistort a camera with fx != fy: "
                          f"pip install opencv-python-headless (or pip install -e '.[official]'); import cv2: {e}") from None
    return cv2


def _camera_matrix(cam: Camera) -> np.ndarray:
    return np.array([[cam.fx, 0.0, cam.cx], [0.0, cam.fy, cam.cy], [0.0, 0.0, 1.0]])


@lru_cache(maxsize=4096)
def official_transform(cam: Camera, f_uni: float) -> OfficialTransform:
    """The official code's transform for a camera (cached: eval selection asks once per label)."""
    undistorted = None
    fx, fy, cx, cy = cam.fx, cam.fy, cam.cx, cam.cy
    if abs(fx - fy) > OFFICIAL_FXFY_TOLERANCE:
        size = (cam.width, cam.height)
        k, _ = _cv2().getOptimalNewCameraMatrix(_camera_matrix(cam), np.zeros((4, 1)), size, 1, size)
        fx, fy, cx, cy = float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2])
        undistorted = Camera(fx, fy, cx, cy, cam.width, cam.height)
    s = f_uni / fx
    resized = Camera(fx * s, fy * s, cx * s, cy * s, int(cam.width * s), int(cam.height * s))
    return OfficialTransform(cam, undistorted, resized)
