"""Where each task's label comes from (the words are rlkit.prompts.TASKS; the image side is rlkit.builder).

- depth, axis_depth: the record's label at the marked pixel (meters).
- speed, time: the marked point's euclidean distance divided by a time or a speed drawn per sample
  (``draw_param``) and stated in the question: m/s and s.
- two_point: the 3D distance between two labeled pixels of one image, each back-projected along its unit
  ray to its euclidean depth with the record's intrinsics: exact, so any image with 2 labels serves.
- camera_motion: the length of the record's "pair" translation (rlkit.records).
- brightness: read from the image at the pixel (rlkit.builder.brightness).

Each rule is written once, on arrays, and used by the train stream (one record), the eval selection and the
median baseline (the store's columns, vectorized).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from rlkit.camera import ray_directions
from rlkit.prompts import TASKS
from rlkit.records import Record, RecordError

PER_PIXEL = ("depth", "axis_depth")  # a label per labeled pixel, as the record holds it
# a training label must not read "0.00" at two decimals (the parser takes no 0, the ratio metrics cannot score it):
# two_point's two labels on one pixel, a speed or time of a point at the camera
MIN_LABEL = 0.005
MEDIAN_SAMPLES = 1_000_000  # drawn labels behind a median baseline of the derived tasks (speed, time, two_point)


def draw_param(task: str, rng: np.random.Generator, size: int | None = None):
    """The time (speed task) or speed (time task) stated in a question: a multiple of the task's step
    in [lo, hi], uniform. None for a task without one."""
    spec = TASKS[task].param
    if spec is None:
        return None
    lo, hi, step = spec
    k = rng.integers(0, round((hi - lo) / step) + 1, size=size)
    return lo + step * k


def other_label(label, n, k):
    """two_point's second label: the k-th (0 <= k < n - 1) of the image's n labels after ``label``, wrapping
    around; k uniform gives every other label alike."""
    return (label + 1 + k) % n


def point_distance(fx, fy, cx, cy, p1, d1, p2, d2) -> np.ndarray:
    """The 3D distance between pixels p1 and p2 ((N, 2)) at euclidean depths d1 and d2 ((N,)) seen by
    cameras with intrinsics fx, fy, cx, cy (scalars or (N,))."""
    cam = SimpleNamespace(fx=fx, fy=fy, cx=cx, cy=cy)
    a = ray_directions(cam, p1) * np.asarray(d1, dtype=np.float64)[:, None]
    b = ray_directions(cam, p2) * np.asarray(d2, dtype=np.float64)[:, None]
    return np.linalg.norm(a - b, axis=1)


def pair_translation(rec: Record) -> list[float]:
    pair = rec.extras.get("pair")
    if pair is None:
        raise RecordError(f"{rec.source}: field 'pair': missing, and task 'camera_motion' needs it")
    return pair["translation"]


def label_value(rec: Record, task: str, label: int, second: int | None = None, param: float | None = None) -> float:
    """The label of one sample from its record (not for brightness, which reads the image)."""
    if task in PER_PIXEL:
        values = rec.depth if task == "depth" else rec.extras.get(task)
        if values is None:
            raise RecordError(f"{rec.source}: field '{task}': missing, and task '{task}' needs it")
        return float(values[label])
    if task == "speed" or task == "time":
        return float(rec.depth[label]) / param
    if task == "two_point":
        c = rec.camera
        return float(point_distance(c.fx, c.fy, c.cx, c.cy, rec.pixels[[label]], rec.depth[[label]],
                                    rec.pixels[[second]], rec.depth[[second]])[0])
    if task == "camera_motion":
        return math.hypot(*pair_translation(rec))
    raise ValueError(f"task {task!r} has no record label")


def eligible_images(src, task: str) -> np.ndarray | None:
    """The images in use (indices into src) that can serve ``task``; None: all of them."""
    if task == "two_point":
        return np.flatnonzero(src.counts >= 2)
    if task == "camera_motion":
        motion = src.store.col.get("image.pair_motion")
        if motion is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(np.isfinite(motion[np.asarray(src.image_index(np.arange(len(src))))]))
    return None


def store_values(src, task: str, images: np.ndarray, labels: np.ndarray, seconds: np.ndarray,
                 params: np.ndarray) -> np.ndarray:
    """label_value for many samples at once, read from the store's columns: images in use, their labels,
    the second labels (two_point) and the drawn parameters (speed, time)."""
    c = src.store.col
    pos = src.label_positions(images, labels)
    if task == "speed" or task == "time":
        return c["label.depth"][pos] / params
    if task == "two_point":
        img = np.asarray(src.image_index(images))
        pos2 = src.label_positions(images, seconds)
        xy = lambda p: np.stack([c["label.x"][p], c["label.y"][p]], axis=1)  # noqa: E731
        return point_distance(c["image.fx"][img], c["image.fy"][img], c["image.cx"][img], c["image.cy"][img],
                              xy(pos), c["label.depth"][pos], xy(pos2), c["label.depth"][pos2])
    if task == "camera_motion":
        return c["image.pair_motion"][np.asarray(src.image_index(images))]
    raise ValueError(f"task {task!r}: read its labels with Source.label_column")


def train_label_sample(src, task: str, seed: int = 0, limit: int = MEDIAN_SAMPLES) -> np.ndarray:
    """Labels of a derived task (speed, time, two_point, camera_motion) as the train stream draws them:
    every image's pair motion, or up to ``limit`` seeded draws (image, label, second label, parameter)."""
    rng = np.random.default_rng([seed, 17, list(TASKS).index(task)])
    images = eligible_images(src, task)
    images = np.arange(len(src)) if images is None else images
    if not len(images):
        return np.zeros(0)
    if task == "camera_motion":
        return store_values(src, task, images, np.zeros(len(images), np.int64), None, None)
    pick = images[rng.integers(len(images), size=limit)]
    n = src.counts[pick]
    labels = rng.integers(n)
    seconds = other_label(labels, n, rng.integers(np.maximum(n - 1, 1))) if task == "two_point" else None
    values = store_values(src, task, pick, labels, seconds, draw_param(task, rng, size=limit))
    return values[values >= MIN_LABEL]  # as training skips them
