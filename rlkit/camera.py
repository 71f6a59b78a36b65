"""Camera math: pinhole intrinsics, focal-length unification, crops, ray directions.

Pixel convention (used everywhere in rlkit): integer pixel coordinates name pixel
*centers*; pixel (0, 0) covers the square [-0.5, 0.5) x [-0.5, 0.5). This is the
OpenCV convention that DepthLMBench intrinsics use, so the ray of pixel (u, v) is
((u - cx) / fx, (v - cy) / fy, 1).

Under a resize by s (new size = old size * s) a point therefore maps as
u' = (u + 0.5) * s - 0.5 and the intrinsics as fx' = fx * s, cx' = (cx + 0.5) * s - 0.5,
which keeps every ray exactly. A crop at offset (x0, y0) maps u' = u - x0, cx' = cx - x0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def crop_camera(cam: Camera, c: Crop) -> Camera:
    return Camera(cam.fx, cam.fy, cam.cx - c.x0, cam.cy - c.y0, c.width, c.height)


def crop_points(points: np.ndarray, c: Crop) -> np.ndarray:
    return np.asarray(points, dtype=np.float64) - np.array([c.x0, c.y0])


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
