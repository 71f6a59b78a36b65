"""Render a split of procedural scenes to a folder of PNGs plus a DepthLMBench jsonl."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from rlkit.records import write_records
from rlkit.synth.render import Scene, camera_to_world, render
from rlkit.synth.scenes import FAMILIES, CameraRange, Rooms, sample_scene

log = logging.getLogger(__name__)
SPLITS = {"train": 0, "eval": 1, "val": 2}  # each split its own random stream: no scene is in two
MAX_DEPTH = {"indoor": 20.0, "outdoor": 80.0}
# camera_motion pairs: how far the second view's camera moves (meters), mostly level, as a walking camera
PAIR_MOTION = {"indoor": (0.2, 1.5), "outdoor": (0.5, 6.0)}
PAIR_CLEARANCE = 0.3  # meters the moved camera keeps from walls and furniture


def _clear(scene: Scene, p: np.ndarray) -> bool:
    """Whether a camera at p is inside every room box and outside every solid box, with clearance."""
    for box in scene.boxes:
        inside = np.all(p > box.lo - PAIR_CLEARANCE) and np.all(p < box.hi + PAIR_CLEARANCE)
        if box.inside and not (np.all(p > box.lo + PAIR_CLEARANCE) and np.all(p < box.hi - PAIR_CLEARANCE)):
            return False
        if not box.inside and inside:
            return False
    return p[1] > PAIR_CLEARANCE


def pair_view(scene: Scene, family: str, rng: np.random.Generator) -> tuple[Scene, np.ndarray]:
    """The scene seen from a moved camera (same orientation and intrinsics) and the translation in the first
    camera's frame (x right, y down, z forward), meters."""
    lo, hi = PAIR_MOTION[family]
    for _ in range(100):
        angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(lo, hi)
        step = length * np.array([np.cos(angle), rng.uniform(-0.15, 0.15), np.sin(angle)])
        step *= length / np.linalg.norm(step)
        if _clear(scene, scene.position + step):
            break
    else:  # a cramped room: a short step forward
        step = np.array([0.0, 0.0, lo])
    moved = dataclasses.replace(scene, position=scene.position + step)
    return moved, camera_to_world(scene.yaw, scene.pitch, scene.roll).T @ step


def scene_rng(family: str, split: str, seed: int, index: int) -> np.random.Generator:
    """Scene seeds are keyed by split, so train and eval never share a scene."""
    return np.random.default_rng([seed, FAMILIES.index(family), SPLITS[split], index])


def render_one(out_dir: Path, family: str, split: str, seed: int, index: int, points_per_image: int,
               camera: CameraRange, rooms: Rooms = Rooms(), pairs: bool = False) -> dict:
    """Render scene ``index`` to its PNG and return its jsonl row (a pure function of the arguments)."""
    rng = scene_rng(family, split, seed, index)
    scene = sample_scene(family, rng, camera, rooms)
    rgb, depth, axis_depth = render(scene)
    valid = np.flatnonzero((np.isfinite(depth) & (depth <= MAX_DEPTH[family])).ravel())
    if len(valid) == 0:
        raise RuntimeError(f"scene {family}/{split}/{index} has no labelable pixel")
    pick = rng.choice(valid, size=min(points_per_image, len(valid)), replace=False)
    ys, xs = np.unravel_index(pick, depth.shape)
    name = f"rgb/{family}_{split}/{index:06d}.png"
    Image.fromarray(rgb).save(out_dir / name, compress_level=1)
    depth_name = f"rgb/{family}_{split}/{index:06d}.depth.npz"
    # The whole euclidean depth map, float32 meters, inf where the ray meets nothing (sky). Not a 16-bit millimetre
    # PNG: that stops at 65.535 m (outdoor labels reach 80 m, the ground runs to the horizon) and has no value for
    # sky; float32 keeps the renderer's depth to 6e-8 (relative), at about 200 KB an image (measured on 6 scenes:
    # 74-276 KB; the RGB PNG 9-34 KB), as exact depths compress poorly.
    np.savez_compressed(out_dir / depth_name, depth=depth.astype(np.float32))
    row = {
        "image": name,
        "intrinsics": scene.camera.as_list(),
        "pixel_coords": [[int(x), int(y)] for x, y in zip(xs, ys)],
        "depth": [round(float(v), 4) for v in depth[ys, xs]],
        "axis_depth": [round(float(v), 4) for v in axis_depth[ys, xs]],
        "scene": f"{family}-{split}-{seed}-{index}",
        "depth_map": depth_name,
    }
    if pairs:  # its own seed: the first view and its labels are the same with or without pairs
        moved, t = pair_view(scene, family, np.random.default_rng([seed, FAMILIES.index(family), SPLITS[split], index, 1]))
        pair_name = f"rgb/{family}_{split}/{index:06d}_pair.png"
        Image.fromarray(render(moved)[0]).save(out_dir / pair_name, compress_level=1)
        row["pair"] = {"image": pair_name, "translation": [round(float(v), 4) for v in t]}
    return row


def generate_split(out_dir: str | Path, family: str, split: str, num_images: int, *, seed: int = 0,
                   points_per_image: int = 16, camera: CameraRange = CameraRange(),
                   rooms: Rooms = Rooms(), progress: bool = True, workers: int | None = None,
                   pairs: bool = False) -> Path:
    """Write ``out_dir/{family}_{split}.jsonl`` and its images; returns the jsonl path.

    Each image gets ``points_per_image`` labels at distinct random pixels that see a surface
    within the family's depth range (never sky), with exact euclidean and principal-axis depth;
    each image's whole euclidean depth map lies beside it (IMAGE.depth.npz, the line's "depth_map").
    ``rooms`` sets how the indoor family looks (lamp, paint spread; rlkit.synth.scenes.Rooms).
    ``pairs``: each image also gets a second view from a camera moved 0.2-1.5 m (indoor) or 0.5-6 m (outdoor),
    same orientation and intrinsics (IMAGE_pair.png, the line's "pair" key: the camera_motion task).
    Scenes render in ``workers`` processes (default: all cores); the output does not depend on it.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown scene family {family!r}; choose from {FAMILIES}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {tuple(SPLITS)}")
    out_dir = Path(out_dir)
    (out_dir / "rgb" / f"{family}_{split}").mkdir(parents=True, exist_ok=True)
    job = partial(render_one, out_dir, family, split, seed, points_per_image=points_per_image, camera=camera,
                  rooms=rooms, pairs=pairs)
    workers = min(workers or os.cpu_count() or 1, max(1, num_images // 8))
    bar = partial(tqdm, total=num_images, desc=f"render {family}/{split}", disable=not progress)
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            rows = list(bar(pool.imap(job, range(num_images), chunksize=8)))
    else:
        rows = list(bar(map(job, range(num_images))))
    path = out_dir / f"{family}_{split}.jsonl"
    write_records(path, rows)  # the jsonl appears last, whole: it marks a finished split
    log.info("wrote %d images to %s", len(rows), path)
    return path
