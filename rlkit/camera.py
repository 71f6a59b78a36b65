"""Camera math: pinhole intrinsics, focal-length unification, crops, ray directions.

Pixel convention (used everywhere in rlkit): integer pixel coordinates name pixel
*centers*; pixel (0, 0) covers the square [-0.5, 0.5) x [-0.5, 0.5). This is the
OpenCV convention that DepthLMBench intrinsics use, so the ray of pixel (u, v) is
((u - cx) / fx, (v - cy) / fy, 1).

Under a resize by s (new size = old size * s) a point therefore maps as
u' = (u + 0.5) * s - 0.5 and the intrinsics as fx' = fx * s, cx' = (cx + 0.5) * s - 0.5,
which keeps every ray exactly. A crop at offset (x0, y0) maps u' = u - x0, cx' = cx - x0.

A camera convention is one transform object per camera (``transform``): ``ExactTransform`` is the above,
``OfficialTransform`` the official DepthLM code's own (int() sizes and pixels, no half-pixel shift, OpenCV
undistortion when fx != fy), for ``camera.resize: official``. Each has a per-camera form and a vectorized
``batch`` over many cameras, tested equal.
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


# ---------------------------------------------------------------- camera conventions: one object each
#
# A convention maps a record's camera, its image and its labeled pixels to what the model sees. Training
# samples, the eval selection, rendering and point clouds all go through a transform object: one per camera
# (``transform``) and, for many cameras at once, the convention's vectorized ``batch`` (the eval selection, the
# size checks), tested equal to the per-camera form.


@dataclass(frozen=True)
class Cameras:
    """Many cameras as arrays (the records store's columns): one entry per image."""

    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: np.ndarray
    height: np.ndarray

    def __len__(self) -> int:
        return len(self.fx)

    def camera(self, i: int) -> Camera:
        return Camera(float(self.fx[i]), float(self.fy[i]), float(self.cx[i]), float(self.cy[i]),
                      int(self.width[i]), int(self.height[i]))


@dataclass(frozen=True)
class ExactTransform:
    """The kit's convention: a resize by exact scales that keeps every ray (pixel centers at integers: u' = (u +
    0.5) s - 0.5), unify_focal's rounded size (or none), a pixel mapped to the nearest one; ``image`` resizes only
    the cropped region (PIL maps output pixel centers through the box exactly)."""

    source: Camera
    size: Resize

    @classmethod
    def of(cls, cam: Camera, f_uni: float, unify: bool = True) -> ExactTransform:
        return cls(cam, unify_focal(cam, f_uni) if unify else identity_resize(cam))

    @property
    def camera(self) -> Camera:
        return resize_camera(self.source, self.size)

    def stretch(self, height: int) -> ExactTransform:
        """The image's height alone resized to ``height`` rows after the resize (the Taskonomy aspect jitter)."""
        return ExactTransform(self.source, stretch_height(self.size, height))

    def points(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) pixels after the transform (int64) of (N, 2) pixels of the record's image."""
        return np.rint(resize_points(uv, self.size)).astype(np.int64)

    def point(self, u: float, v: float) -> tuple[int, int]:
        x, y = self.points(np.array([[u, v]], dtype=np.float64))[0]
        return int(x), int(y)

    def image(self, img: Image.Image, crop: Crop) -> Image.Image:
        r = self.size
        if r.sx == 1.0 and r.sy == 1.0:
            return img.crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))
        box = (crop.x0 / r.sx, crop.y0 / r.sy, (crop.x0 + crop.width) / r.sx, (crop.y0 + crop.height) / r.sy)
        return img.resize((crop.width, crop.height), Image.BILINEAR, box=box)

    @staticmethod
    def batch(cams: Cameras, f_uni: float, unify: bool, u: np.ndarray, v: np.ndarray):
        """(x, y, width, height) after the transform, for pixel (u[i], v[i]) of camera i: ``of(...).point`` and
        ``size``, vectorized (unify_focal's rounding, resize_points' mapping)."""
        w, h = np.asarray(cams.width, dtype=np.int64), np.asarray(cams.height, dtype=np.int64)
        if unify:
            w = np.maximum(1, np.rint(w * f_uni / cams.fx)).astype(np.int64)
            h = np.maximum(1, np.rint(h * f_uni / cams.fy)).astype(np.int64)
        sx, sy = w / np.asarray(cams.width), h / np.asarray(cams.height)
        return (np.rint((np.asarray(u) + 0.5) * sx - 0.5).astype(np.int64),
                np.rint((np.asarray(v) + 0.5) * sy - 0.5).astype(np.int64), w, h)


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

    @classmethod
    def of(cls, cam: Camera, f_uni: float, unify: bool = True) -> OfficialTransform:
        return official_transform(cam, f_uni)  # unify is always on: CameraOptions refuses official without it

    def points(self, uv: np.ndarray) -> np.ndarray:
        """Step 3 for (N, 2) pixels of the record's image (int64)."""
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        src, new = self.source, self.camera
        return np.stack([_official_map(uv[:, 0], src.cx, new.fx / src.fx, new.cx),
                         _official_map(uv[:, 1], src.cy, new.fy / src.fy, new.cy)], axis=1)

    def point(self, u: float, v: float) -> tuple[int, int]:
        x, y = self.points(np.array([[u, v]], dtype=np.float64))[0]
        return int(x), int(y)

    @property
    def size(self) -> Resize:
        """The size after step 2 (the scales are new/old size, for callers that read them)."""
        w, h = self.camera.width, self.camera.height
        return Resize(w, h, w / self.source.width, h / self.source.height)

    def image(self, img: Image.Image, crop: Crop) -> Image.Image:
        """Steps 1 and 2 on the record's whole image, then the crop (a new image; ``img`` is left as it is)."""
        return self._whole(img).crop((crop.x0, crop.y0, crop.x0 + crop.width, crop.y0 + crop.height))

    @staticmethod
    def batch(cams: Cameras, f_uni: float, unify: bool, u: np.ndarray, v: np.ndarray):
        """(x, y, width, height) after the transform, for pixel (u[i], v[i]) of camera i: ``of(...).point`` and
        ``size``, vectorized for square pixels (the cameras OpenCV undistorts go one at a time)."""
        fx, fy, cx, cy = (np.asarray(a, dtype=np.float64) for a in (cams.fx, cams.fy, cams.cx, cams.cy))
        s = f_uni / fx
        nfx, nfy, ncx, ncy = fx * s, fy * s, cx * s, cy * s
        out = (_official_map(np.asarray(u, dtype=np.float64), cx, nfx / fx, ncx),
               _official_map(np.asarray(v, dtype=np.float64), cy, nfy / fy, ncy),
               np.trunc(np.asarray(cams.width) * s).astype(np.int64),
               np.trunc(np.asarray(cams.height) * s).astype(np.int64))
        for i in np.flatnonzero(np.abs(fx - fy) > OFFICIAL_FXFY_TOLERANCE):
            t = official_transform(cams.camera(int(i)), f_uni)
            (out[0][i], out[1][i]), out[2][i], out[3][i] = t.point(u[i], v[i]), t.camera.width, t.camera.height
        return out

    def _whole(self, img: Image.Image) -> Image.Image:
        if self.undistorted is not None:
            a, b = _camera_matrix(self.source), _camera_matrix(self.undistorted)
            img = Image.fromarray(_cv2().undistort(np.asarray(img), a, np.zeros((4, 1)), None, b))
        # Image.resize's default for RGB images since Pillow 7 (what the official code's bare resize() used)
        if self.focal_size is not None:
            img = img.resize(self.focal_size, Image.BICUBIC)
        return img.resize((self.camera.width, self.camera.height), Image.BICUBIC)


def _official_map(u: np.ndarray, c: float | np.ndarray, k: float | np.ndarray, new_c: float | np.ndarray
                  ) -> np.ndarray:
    """Step 3 on one axis: int((u - c) * k + c'), int() truncating toward zero."""
    return np.trunc((u - c) * k + new_c).astype(np.int64)


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


CONVENTIONS = {"exact": ExactTransform, "official": OfficialTransform}  # camera.resize's values


def transform(cam: Camera, f_uni: float, convention: str = "exact", unify: bool = True
              ) -> ExactTransform | OfficialTransform:
    """The transform of one camera under a convention (``unify``: resize to focal length ``f_uni``)."""
    return CONVENTIONS[convention].of(cam, f_uni, unify)
