"""Argoverse 2 Sensor Dataset (native layout) for ``data convert argoverse2``: each ring camera image with the LiDAR
sweep nearest in time, projected with the car's motion between the two taken out.

The official DepthLM curation (utils/curate_argoverse.py, read in a vendored copy) goes through the av2 API, and so
does this adapter's geometry, re-implemented with pyarrow and numpy:
- the seven ring cameras (its loop over av2's RingCameras; the stereo pair is never reached), every image;
- the sweep: av2 AV2SensorDataLoader.get_closest_lidar_fpath, i.e. SynchronizationDB.get_closest_lidar_timestamp:
  the sweep whose timestamp is nearest the image's (a tie goes to the earlier one), none when it is more than 51 ms
  away (MAX_LIDAR_ANYCAM_TIMESTAMP_DIFF, half of 102 ms);
- the points (x, y, z of sensors/lidar/TIMESTAMP.feather, in the ego-vehicle frame at the sweep's time) go to the
  camera as av2 PinholeCamera.project_ego_to_img_motion_compensated does: ego (sweep time) -> city
  (city_SE3_egovehicle at the sweep's timestamp) -> ego (at the image's timestamp) -> camera (the inverse of
  calibration/egovehicle_SE3_sensor), then the pinhole K of calibration/intrinsics.feather. Poses are looked up at
  exactly those timestamps, as av2's get_city_SE3_ego does;
- K alone: av2's PinholeCamera (so the official curation) never applies the k1 k2 k3 intrinsics.feather lists, and
  neither does this adapter.
An image without a sweep within 51 ms, or without a pose at its timestamp or its sweep's, is not listed (av2 has no
answer for it; the official curation skips it too): the command logs how many. Where this adapter differs from the
official curation: it keeps the nearest point per pixel (the official one samples points, so a pixel can get a far
point seen through a near surface), labels camera z (the official one the point's distance, which the converter
computes from z and the pixel's ray), and does not rescale images with fx > 1000 (the kit resizes at f_uni).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.lidar import pose_matrix, transform_points, zbuffer_depth

log = logging.getLogger(__name__)

RING_CAMERAS = ("ring_front_center", "ring_front_left", "ring_front_right", "ring_rear_left", "ring_rear_right",
                "ring_side_left", "ring_side_right")
MAX_OFFSET_NS = 51_000_000  # av2 SynchronizationDB.MAX_LIDAR_ANYCAM_TIMESTAMP_DIFF
POSE = ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")
INTRINSICS = ("fx_px", "fy_px", "cx_px", "cy_px", "width_px", "height_px")


def read_columns(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named columns of a .feather table (pyarrow: a dependency of datasets, imported only here)."""
    try:
        import pyarrow
        from pyarrow import feather
    except ImportError:
        raise ConvertError("argoverse2 reads .feather files with pyarrow: pip install pyarrow") from None
    try:
        table = feather.read_table(path, columns=list(columns))
    except FileNotFoundError:
        raise ConvertError(f"argoverse2: file not found: {path}") from None
    except (OSError, ValueError, pyarrow.ArrowException) as e:  # a cut file, a missing column
        raise ConvertError(f"{path}: cannot be read as a feather table with columns {', '.join(columns)} "
                           f"({type(e).__name__}: {e})") from None
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in columns}


def _rows(path: Path, key: str, columns: tuple[str, ...]) -> dict:
    """{key value: (the numeric columns...)} of a feather table, one entry per row."""
    cols = read_columns(path, (key, *columns))
    values = np.stack([cols[c].astype(np.float64) for c in columns], axis=1)
    return dict(zip(cols[key].tolist(), map(tuple, values.tolist())))


def argoverse2(source: Path):
    """SOURCE: a split folder of logs (train/, val/: LOG_ID/sensors, calibration, city_SE3_egovehicle.feather) or
    one log folder."""

    if (source / "calibration").is_dir():
        logs = [source]
    else:
        logs = sorted(p for p in source.iterdir() if (p / "calibration").is_dir()) if source.is_dir() else []
    if not logs:
        raise ConvertError(f"argoverse2: no log folder (LOG_ID/calibration/, sensors/) in {source}")
    entries, unlisted = [], 0
    for log_dir in logs:
        listed, skipped = _log_entries(log_dir)
        entries += listed
        unlisted += skipped
    if unlisted:
        log.warning("argoverse2: %d images have no LiDAR sweep within %d ms, or no pose at their or their sweep's "
                    "timestamp; not listed", unlisted, MAX_OFFSET_NS // 1_000_000)
    if not entries:
        raise ConvertError(f"argoverse2: no ring camera image with a LiDAR sweep within "
                           f"{MAX_OFFSET_NS // 1_000_000} ms in {source}")
    spec = DepthSpec(kind="z", native="Argoverse 2 LiDAR sweeps (ego-frame x y z) nearest each ring camera image in "
                                      "time, moved to the image's time through city_SE3_egovehicle (av2 "
                                      "project_ego_to_img_motion_compensated), nearest point's camera z per pixel")
    return Listing(entries, spec)


def _stamped(folder: Path, pattern: str) -> list[Path]:
    """The files of a sensor folder named by their timestamp (TIMESTAMP_NS.ext), in time order; other files (a
    thumbnail, an editor's backup) are left out with a log line."""
    files = sorted(folder.glob(pattern))
    stamped = [p for p in files if p.stem.isdigit()]
    if len(stamped) < len(files):
        log.warning("%s: %d files not named TIMESTAMP_NS left out (e.g. %s)", folder, len(files) - len(stamped),
                    next(p.name for p in files if not p.stem.isdigit()))
    return sorted(stamped, key=lambda p: int(p.stem))


def _log_entries(log_dir: Path) -> tuple[list[Entry], int]:
    """(the entries of one log, how many images were left out for want of a sweep or a pose)."""
    images = {cam: _stamped(log_dir / "sensors" / "cameras" / cam, "*.jpg") for cam in RING_CAMERAS}
    images = {cam: files for cam, files in images.items() if files}
    if not images:
        return [], 0
    calib = log_dir / "calibration"
    intrinsics = _rows(calib / "intrinsics.feather", "sensor_name", INTRINSICS)
    extrinsics = _rows(calib / "egovehicle_SE3_sensor.feather", "sensor_name", POSE)
    poses_path = log_dir / "city_SE3_egovehicle.feather"
    poses = _rows(poses_path, "timestamp_ns", POSE)
    sweeps = np.array([int(p.stem) for p in _stamped(log_dir / "sensors" / "lidar", "*.feather")], dtype=np.int64)
    entries, unlisted = [], 0
    for cam, files in images.items():
        for table, path in ((intrinsics, "intrinsics.feather"), (extrinsics, "egovehicle_SE3_sensor.feather")):
            if cam not in table:
                raise ConvertError(f"{calib / path}: no row with sensor_name {cam!r}, whose images are in "
                                   f"{log_dir / 'sensors' / 'cameras' / cam}")
        fx, fy, cx, cy, width, height = intrinsics[cam]
        cam_from_ego = np.linalg.inv(pose_matrix(extrinsics[cam][:4], extrinsics[cam][4:],
                                                 f"{calib / 'egovehicle_SE3_sensor.feather'}: {cam}"))
        for image in files:
            t_cam = int(image.stem)
            t_sweep = _nearest(sweeps, t_cam)
            if t_sweep is None or t_cam not in poses or t_sweep not in poses:
                unlisted += 1
                continue
            city_from = {t: pose_matrix(poses[t][:4], poses[t][4:], f"{poses_path}: timestamp_ns {t}")
                         for t in (t_cam, t_sweep)}
            matrix = cam_from_ego @ np.linalg.inv(city_from[t_cam]) @ city_from[t_sweep]
            name = f"{log_dir.name}/{cam}/{t_cam}"
            sweep = log_dir / "sensors" / "lidar" / f"{t_sweep}.feather"
            entries.append(Entry(name, partial(_frame, name, image, sweep, matrix, (fx, fy, cx, cy),
                                               (int(width), int(height)), log_dir.name)))
    return entries, unlisted


def _nearest(sweeps: np.ndarray, t: int) -> int | None:
    """The sweep timestamp nearest ``t`` (the earlier one of a tie), or None beyond MAX_OFFSET_NS."""
    if not len(sweeps):
        return None
    best = int(sweeps[np.argmin(np.abs(sweeps - t))])
    return best if abs(best - t) <= MAX_OFFSET_NS else None


def _frame(name, image, sweep, cam_from_sweep, intrinsics, size, scene) -> Frame:
    cols = read_columns(sweep, ("x", "y", "z"))  # float16 in the released sweeps
    points = np.stack([cols[c].astype(np.float64) for c in ("x", "y", "z")], axis=1)
    depth = zbuffer_depth(transform_points(points, cam_from_sweep), intrinsics, *size)
    return Frame(name, intrinsics, depth, str(image), image_path=image, scene=scene)
