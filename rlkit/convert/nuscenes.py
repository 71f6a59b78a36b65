"""nuScenes v1.0 (native layout) for ``data convert nuscenes``: the keyframe LiDAR sweep projected into each keyframe
camera image.

What the official DepthLM curation does, and what this adapter follows (utils/curate_nuscenes_eval.py, read in a
vendored copy): every sample (keyframe) of the tables, the six cameras, the LIDAR_TOP sweep of the same sample, the
nearest point per pixel, camera z as the depth. Its prepare_data.sh evaluates on the v1.0-mini tables (the released
script reads the last 5 % of v1.0-trainval instead, likely a release mistake, its author answered in
DepthLM_Official issue #17): point SOURCE at the v1.0-mini dataroot for that set. Where this adapter differs: it
moves the points through the ego poses as the nuScenes devkit does (NuScenes.map_pointcloud_to_image: sensor -> ego
at the sweep's time -> global -> ego at the image's time -> camera), where the official curation uses the two
calibrations only and ignores the car's motion between the sweep and the exposure; it drops points closer than 1 m
(the devkit's min_dist: returns off the car's own body); and it rounds projections to the nearest pixel (the kit's
pixel centers are integers) where the official code floors them.

The quaternion poses (w, x, y, z, as nuScenes, Argoverse 2 and DGP all store them) are rlkit.convert.lidar's
``pose_matrix``.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.lidar import pose_matrix, read_json, transform_points, zbuffer_depth

log = logging.getLogger(__name__)

# the official curation's CAMERA_NAMES, in its order
CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_FRONT_LEFT")
LIDAR = "LIDAR_TOP"
TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sensor", "scene")
MIN_DIST = 1.0  # meters of camera z: the devkit's map_pointcloud_to_image default
# devkit LidarPointCloud.from_file: float32 x, y, z, intensity, ring per point
BIN_FLOATS = 5


def _tables(source: Path) -> tuple[Path, Path]:
    """(the table folder, the dataroot its file names are relative to): SOURCE is the dataroot holding one
    v1.0-*/ table folder, or a table folder itself."""
    if (source / "sample_data.json").is_file():
        return source, source.parent
    found = sorted(p for p in source.glob("v1.0-*") if (p / "sample_data.json").is_file())
    if len(found) != 1:
        raise ConvertError(f"nuscenes: {source} holds {len(found)} table folders (v1.0-*/sample_data.json"
                           f"{': ' + ', '.join(p.name for p in found) if found else ''}); pass the one to convert, "
                           "e.g. DATAROOT/v1.0-mini")
    return found[0], source


class _Table:
    """One nuScenes table (a JSON list of records), by token; a missing record or key is an error naming the file."""

    def __init__(self, path: Path):
        self.path = path
        self.rows = read_json(path, "nuscenes")
        if not isinstance(self.rows, list):
            raise ConvertError(f"{path}: expected a JSON list of records")
        self.by_token = {self.field(r, "token"): r for r in self.rows}

    def field(self, record, key: str):
        try:
            return record[key]
        except (KeyError, TypeError):
            raise ConvertError(f"{self.path}: a record has no '{key}': {str(record)[:120]}") from None

    def get(self, token: str, why: str) -> dict:
        if token not in self.by_token:
            raise ConvertError(f"{self.path}: no record with token {token} ({why})")
        return self.by_token[token]


def nuscenes(source: Path):
    """SOURCE: a nuScenes dataroot (samples/, v1.0-*/) or its table folder. Every keyframe camera image of the six
    CAMERAS, with the keyframe LIDAR_TOP sweep of its sample."""

    tables_dir, root = _tables(source)
    t = {name: _Table(tables_dir / f"{name}.json") for name in TABLES}
    sd_field, cs_table = t["sample_data"].field, t["calibrated_sensor"]
    channel = {s["token"]: t["sensor"].field(s, "channel") for s in t["sensor"].rows}
    keyframes = {}  # (sample token, channel) -> sample_data record: the devkit's sample['data']
    for sd in t["sample_data"].rows:
        if sd_field(sd, "is_key_frame"):
            cs = cs_table.get(sd_field(sd, "calibrated_sensor_token"), f"the calibration of {sd_field(sd, 'filename')}")
            keyframes[(sd_field(sd, "sample_token"), channel.get(cs_table.field(cs, "sensor_token")))] = sd
    scene_names = {s["token"]: t["scene"].field(s, "name") for s in t["scene"].rows}
    entries, no_lidar = [], 0
    for sample in t["sample"].rows:
        lidar = keyframes.get((sample["token"], LIDAR))
        if lidar is None:
            no_lidar += 1
            continue
        scene = scene_names.get(t["sample"].field(sample, "scene_token"))
        entries += [_entry(t, root, keyframes[(sample["token"], cam)], lidar, scene) for cam in CAMERAS
                    if (sample["token"], cam) in keyframes]
    if no_lidar:
        log.warning("nuscenes: %d samples have no %s keyframe; their images are not listed", no_lidar, LIDAR)
    if not entries:
        raise ConvertError(f"nuscenes: {tables_dir} lists no keyframe camera image with a {LIDAR} sweep")
    spec = DepthSpec(kind="z", native=f"nuScenes {LIDAR} keyframe sweeps (.pcd.bin, float32 x y z intensity ring) "
                                      "moved into each keyframe camera through the ego poses (devkit "
                                      "map_pointcloud_to_image), nearest point's camera z per pixel; points under "
                                      f"{MIN_DIST:g} m dropped")
    return Listing(entries, spec)


def _entry(t: dict, root: Path, cam: dict, lidar: dict, scene: str | None) -> Entry:
    """One camera keyframe: camera <- ego (image time) <- global <- ego (sweep time) <- LiDAR, the devkit's chain."""
    sd_field, cs_table = t["sample_data"].field, t["calibrated_sensor"]
    filename = sd_field(cam, "filename")

    def pose(table_name: str, record: dict, key: str) -> np.ndarray:
        table = t[table_name]
        rec = table.get(sd_field(record, key), f"{key} of {sd_field(record, 'filename')}")
        return pose_matrix(table.field(rec, "rotation"), table.field(rec, "translation"),
                           f"{table.path}: token {rec['token']}")

    cam_cs = cs_table.get(sd_field(cam, "calibrated_sensor_token"), f"the calibration of {filename}")
    try:
        k = np.asarray(cs_table.field(cam_cs, "camera_intrinsic"), dtype=np.float64)
        intrinsics = (float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))
    except (ValueError, TypeError, IndexError):
        raise ConvertError(f"{cs_table.path}: token {cam_cs['token']}: 'camera_intrinsic' is not a 3x3 matrix") \
            from None
    cam_from_lidar = (np.linalg.inv(pose("calibrated_sensor", cam, "calibrated_sensor_token"))
                      @ np.linalg.inv(pose("ego_pose", cam, "ego_pose_token"))
                      @ pose("ego_pose", lidar, "ego_pose_token")
                      @ pose("calibrated_sensor", lidar, "calibrated_sensor_token"))
    image, sweep = root / filename, root / sd_field(lidar, "filename")
    for p in (image, sweep):
        if not p.is_file():
            raise ConvertError(f"nuscenes: {p} is missing ({t['sample_data'].path} lists it)")
    name = Path(filename).with_suffix("").as_posix()
    size = tuple(sd_field(cam, k) for k in ("width", "height"))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        raise ConvertError(f"{t['sample_data'].path}: token {cam.get('token')}: width and height {size} are not positive "
                           "whole numbers")
    return Entry(name, partial(_frame, name, image, sweep, cam_from_lidar, intrinsics, size, scene))


def read_bin(path: Path) -> np.ndarray:
    """(N, 3) x, y, z of a .pcd.bin sweep: N x 5 float32 (devkit LidarPointCloud.from_file)."""
    try:
        raw = np.fromfile(path, dtype="<f4")
    except OSError as e:
        raise ConvertError(f"nuscenes: cannot read {path} ({e})") from None
    if raw.size % BIN_FLOATS:
        raise ConvertError(f"{path}: {raw.size} float32 values, not a multiple of {BIN_FLOATS} (x y z intensity "
                           "ring per point): a truncated sweep")
    return raw.reshape(-1, BIN_FLOATS)[:, :3]


def _frame(name, image, sweep, cam_from_lidar, intrinsics, size, scene) -> Frame:
    depth = zbuffer_depth(transform_points(read_bin(sweep), cam_from_lidar), intrinsics, *size, min_depth=MIN_DIST)
    return Frame(name, intrinsics, depth, str(image), image_path=image, scene=scene)
