"""LiDAR points to a sparse depth map: the one projection every LiDAR adapter uses, and the pose and JSON readers
they share.

A LiDAR sweep sees past the camera's occluders (it sits elsewhere on the car), so several points can fall into one
pixel, the far ones through the near surface. Keeping the nearest point per pixel (a z-buffer) is the standard
answer (the official DepthLM curation samples its labels from the projected points instead; each adapter's
docstring says where it differs).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from rlkit.convert.core import ConvertError


def read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConvertError(f"{what}: file not found: {path}") from None
    except (ValueError, OSError) as e:
        raise ConvertError(f"{path}: not readable JSON ({type(e).__name__}: {e})") from None


def pose_matrix(rotation, translation, what: str) -> np.ndarray:
    """The 4x4 transform of a rotation quaternion (w, x, y, z: pyquaternion's order, which the nuScenes devkit and
    dgp use; Argoverse 2's qw qx qy qz) and a translation. The quaternion is normalized, as pyquaternion's
    rotation_matrix does; ``what`` (the file and key) names a bad one."""
    try:
        w, x, y, z = (float(v) for v in rotation)
        t = np.array([float(v) for v in translation])
    except (TypeError, ValueError):
        raise ConvertError(f"{what}: expected a quaternion w x y z and a translation x y z, got {rotation!r} and "
                           f"{translation!r}") from None
    norm = math.sqrt(w * w + x * x + y * y + z * z)
    if t.shape != (3,) or not (np.isfinite(t).all() and math.isfinite(norm) and norm > 1e-9):
        raise ConvertError(f"{what}: not a rotation quaternion and a 3D translation: {rotation!r}, {translation!r}")
    w, x, y, z = w / norm, x / norm, y / norm, z / norm
    m = np.eye(4)
    m[:3, :3] = [[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                 [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                 [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]]
    m[:3, 3] = t
    return m


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 3) points through a 4x4 rigid transform (or a 3x4 one)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def zbuffer_depth(points_cam: np.ndarray, intrinsics: tuple[float, float, float, float], width: int, height: int,
                  *, min_depth: float = 1e-3) -> np.ndarray:
    """(H, W) float32 camera-z map of the points (N, 3) given in the camera frame (x right, y down, z forward, the
    OpenCV convention), projected with the pinhole ``intrinsics`` (fx, fy, cx, cy; integer pixel coordinates are
    pixel centers, rlkit.camera). A point lands in the pixel nearest its projection; where several do, the
    smallest z wins. Pixels no point reaches are NaN (the converter never labels them). Points behind the camera
    (z < ``min_depth``), not finite, or outside the image are dropped."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    points = np.asarray(points_cam, dtype=np.float64).reshape(-1, 3)
    points = points[np.isfinite(points).all(axis=1) & (points[:, 2] >= min_depth)]
    z = points[:, 2]
    u = np.rint(points[:, 0] / z * fx + cx)
    v = np.rint(points[:, 1] / z * fy + cy)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    flat = v[inside].astype(np.int64) * width + u[inside].astype(np.int64)
    z = z[inside]
    # by pixel, then near to far: the first point of each pixel is its nearest (no reliance on the order in which
    # numpy writes repeated indices)
    order = np.lexsort((z, flat))
    first = np.unique(flat[order], return_index=True)[1]
    depth = np.full(width * height, np.nan, dtype=np.float32)
    depth[flat[order][first]] = z[order][first]
    return depth.reshape(height, width)
