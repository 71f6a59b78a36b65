"""Waymo Open Dataset v2 (the parquet release): every camera image with the LiDAR depth that lands in it.

SOURCE is one split folder (training/, validation/ or testing/) with a folder per component and a parquet file per
segment in each: camera_image/, camera_calibration/, lidar/, lidar_calibration/, lidar_pose/, vehicle_pose/
(column names as waymo_open_dataset/v2/perception/*.py and v2/component.py make them, e.g.
``[CameraCalibrationComponent].intrinsic.f_u``). As the official DepthLM curation (utils/curate_waymo.py): all
five cameras, every frame, the first return of every laser.

The route (the official code builds the depth image with Waymo's TensorFlow utilities in the distorted image, then
undistorts the image with OpenCV but moves each label through the undistortion map read the wrong way round:
map[y, x] says where undistorted pixel (x, y) comes from, not where distorted pixel (x, y) goes): each laser's range
image -> points in the vehicle frame exactly as Waymo's range_image_utils (compute_inclination,
compute_range_image_polar, compute_range_image_cartesian: row 0 is the highest beam, the azimuth corrected by the
laser's yaw) -> the world frame, with the per-pixel pose of lidar_pose where a laser has one (the top LiDAR: motion
during the sweep) and the frame's vehicle_pose otherwise -> the vehicle frame at the image's own pose
([CameraImageComponent].pose) -> the camera frame (the calibration's extrinsic is camera -> vehicle; Waymo's camera
has x forward, y left, z up, made OpenCV's x right, y down, z forward) -> rlkit.convert.lidar.zbuffer_depth with the
pinhole intrinsics, nearest point per pixel. The image is undistorted onto that pinhole camera (same f and c) through
Waymo's own distortion model (third_party/camera/camera_model.cc, DirectionToImage: OpenCV's k1 k2 k3 p1 p2, radial
factor trusted in [0.8, 1.2]). Waymo puts pixel 0's left edge at 0 (lidar.py: CameraProjectionRangeImage;
CameraModel::InImage), the kit pixel centers at integers: cx = c_u - 0.5. Not modelled: the rolling shutter (Waymo's
CameraModel solves each point's row time; here every point is projected at the image's pose, as its global-shutter
path does).

Every component file of a segment is read whole, once (a filtered read of one frame scans the whole v2 file anyway:
waymo-open-dataset#841); a segment's LiDAR (first returns and the top LiDAR's pixel poses) takes roughly 2 to 3 GB
of memory while its images are converted.
"""

from __future__ import annotations

import io
import math
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from rlkit.convert.core import ConvertError, DepthSpec, Entry, Frame, Listing
from rlkit.convert.readers import bilinear
from rlkit.convert.lidar import transform_points, zbuffer_depth

TIME, CAMERA, LASER = "key.frame_timestamp_micros", "key.camera_name", "key.laser_name"
IMAGE, IMAGE_POSE = "[CameraImageComponent].image", "[CameraImageComponent].pose.transform"
_CAL = "[CameraCalibrationComponent]."
INTRINSIC = tuple(f"{_CAL}intrinsic.{k}" for k in ("f_u", "f_v", "c_u", "c_v", "k1", "k2", "p1", "p2", "k3"))
CAMERA_COLUMNS = (*INTRINSIC, f"{_CAL}extrinsic.transform", f"{_CAL}width", f"{_CAL}height")
RANGE = ("[LiDARComponent].range_image_return1.values", "[LiDARComponent].range_image_return1.shape")
_LASER = "[LiDARCalibrationComponent]."
LASER_COLUMNS = (f"{_LASER}extrinsic.transform", f"{_LASER}beam_inclination.min", f"{_LASER}beam_inclination.max",
                 f"{_LASER}beam_inclination.values")
PIXEL_POSE = ("[LiDARPoseComponent].range_image_return1.values", "[LiDARPoseComponent].range_image_return1.shape")
VEHICLE_POSE = "[VehiclePoseComponent].world_from_vehicle.transform"
COMPONENTS = ("camera_calibration", "lidar", "lidar_calibration", "lidar_pose", "vehicle_pose")
# Waymo's camera frame (x forward, y left, z up) -> OpenCV's (x right, y down, z forward)
OPENCV_FROM_WAYMO = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)


def waymo(source: Path):
    """One entry per row of camera_image/SEGMENT.parquet (a segment's frames x its cameras), named
    SEGMENT/TIMESTAMP_CAMERA as the official curation names its images."""

    if not (source / "camera_image").is_dir():
        raise ConvertError(f"waymo: {source} has no camera_image/ folder; SOURCE is a split folder of the v2 "
                           "release (training/, validation/ or testing/)")
    spec = DepthSpec(kind="z", native="Waymo v2: the first return of every LiDAR, z-buffered into each undistorted "
                                      "camera image (meters of camera z; no point = no measurement)")
    segments = _Segments(source)
    entries = []
    for path in sorted((source / "camera_image").glob("*.parquet")):
        context = path.stem
        for component in COMPONENTS:
            if not (source / component / path.name).is_file():
                raise ConvertError(f"waymo: segment {context}: the {component} component is missing: "
                                   f"{source / component / path.name}")
        keys = _read_parquet(path, (TIME, CAMERA))
        for time, camera in sorted(zip(keys.column(TIME).to_pylist(), keys.column(CAMERA).to_pylist())):
            name = f"{context}/{time}_{camera}"
            entries.append(Entry(name, lambda name=name, context=context, time=time, camera=camera:
                                 segments.get(context).frame(name, time, camera)))
    if not entries:
        raise ConvertError(f"waymo: no camera images in {source / 'camera_image'}")
    return Listing(entries, spec)


def _read_parquet(path: Path, columns: tuple[str, ...]):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise ConvertError(f"{path}: no column {missing[0]!r}: not a Waymo v2 {path.parent.name} file")
        return pq.read_table(path, columns=list(columns))
    except FileNotFoundError:
        raise ConvertError(f"waymo: file not found: {path}") from None
    except (pa.ArrowException, OSError) as e:  # a cut or corrupt file
        raise ConvertError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None


class _Table:
    """One component file of one segment, its rows found by their key columns."""

    def __init__(self, path: Path, keys: tuple[str, ...], columns: tuple[str, ...]):
        self.path = path
        self.table = _read_parquet(path, keys + columns)
        self.rows = {key: i for i, key in enumerate(zip(*(self.table.column(k).to_pylist() for k in keys)))}

    def row(self, key: tuple, what: str) -> int:
        if key not in self.rows:
            raise ConvertError(f"{self.path}: no row for {what}")
        return self.rows[key]

    def value(self, column: str, row: int):
        """A cell: None when null, a list column as a float64 array (without a copy into Python objects: a range
        image holds millions of values), anything else as Python's value."""
        value = self.table.column(column)[row]
        if not value.is_valid:
            return None
        if hasattr(value, "values"):  # list and fixed-size list scalars
            return value.values.to_numpy(zero_copy_only=False).astype(np.float64)
        return value.as_py()

    def required(self, column: str, row: int, what: str):
        value = self.value(column, row)
        if value is None:
            raise ConvertError(f"{self.path}: {column} is empty for {what}")
        return value

    def matrix(self, column: str, row: int, what: str) -> np.ndarray:
        """A 4x4 transform stored as 16 row-major numbers."""
        value = self.required(column, row, what)
        if not isinstance(value, np.ndarray) or value.size != 16 or not np.isfinite(value).all():
            raise ConvertError(f"{self.path}: {column} for {what} is not 16 finite numbers (a 4x4 transform)")
        return value.reshape(4, 4)

    def grid(self, columns: tuple[str, str], row: int, what: str) -> np.ndarray:
        """A flattened range image (values, shape) as its (H, W, C) array."""
        values, shape = (self.required(c, row, what) for c in columns)
        if shape.size != 3 or values.size != int(np.prod(shape)):
            raise ConvertError(f"{self.path}: {columns[0]} holds {values.size} values for {what}, its shape says "
                               f"{shape.astype(int).tolist()}")
        return values.reshape(shape.astype(int))


class _Segments:
    """The segment being converted: the entries come segment by segment, so each file is read once."""

    def __init__(self, root: Path):
        self.root = root
        self.current = None

    def get(self, context: str) -> "_Segment":
        if self.current is None or self.current.context != context:
            self.current = _Segment(self.root, context)
        return self.current


class _Segment:
    def __init__(self, root: Path, context: str):
        self.root, self.context = root, context
        self._sweep = (None, None)  # (timestamp, world points): the five cameras of a frame share one sweep

    def _file(self, component: str) -> Path:
        return self.root / component / f"{self.context}.parquet"

    @cached_property
    def images(self) -> _Table:
        return _Table(self._file("camera_image"), (TIME, CAMERA), (IMAGE, IMAGE_POSE))

    @cached_property
    def cameras(self) -> _Table:
        return _Table(self._file("camera_calibration"), (CAMERA,), CAMERA_COLUMNS)

    @cached_property
    def lidar(self) -> _Table:
        return _Table(self._file("lidar"), (TIME, LASER), RANGE)

    @cached_property
    def lasers(self) -> _Table:
        return _Table(self._file("lidar_calibration"), (LASER,), LASER_COLUMNS)

    @cached_property
    def pixel_poses(self) -> _Table:
        return _Table(self._file("lidar_pose"), (TIME, LASER), PIXEL_POSE)

    @cached_property
    def vehicle_poses(self) -> _Table:
        return _Table(self._file("vehicle_pose"), (TIME,), (VEHICLE_POSE,))

    def frame(self, name: str, time: int, camera: int) -> Frame:
        what = f"camera {camera} at {time}"
        img, cam = self.images.row((time, camera), what), self.cameras.row((camera,), f"camera {camera}")
        f_u, f_v, c_u, c_v, *distortion = (self.cameras.required(c, cam, what) for c in INTRINSIC)
        width, height = (self.cameras.required(c, cam, what) for c in CAMERA_COLUMNS[-2:])
        if not all(isinstance(v, int) and v > 0 for v in (width, height)):
            raise ConvertError(f"{self.cameras.path}: the width and height of camera {camera} are {width!r} and "
                               f"{height!r}, not positive whole numbers")
        extrinsic = self.cameras.matrix(CAMERA_COLUMNS[-3], cam, what)
        image_pose = self.images.matrix(IMAGE_POSE, img, what)
        cam_from_world = OPENCV_FROM_WAYMO @ np.linalg.inv(extrinsic) @ np.linalg.inv(image_pose)
        intrinsics = (f_u, f_v, c_u - 0.5, c_v - 0.5)
        depth = zbuffer_depth(transform_points(self.world_points(time), cam_from_world), intrinsics, width, height)
        rgb = undistort(self._image(img, what, width, height), intrinsics, distortion)
        return Frame(name, intrinsics, depth, f"{self.images.path}: {what}", rgb=rgb, scene=self.context)

    def _image(self, row: int, what: str, width: int, height: int) -> np.ndarray:
        """The JPEG of a camera_image row, decoded whole and sized against its calibration."""
        data = self.images.required(IMAGE, row, what)
        try:
            with Image.open(io.BytesIO(data)) as pil:
                rgb = np.asarray(pil.convert("RGB"))
        except Exception as e:  # broken JPEG data: PIL raises OSError, SyntaxError, ValueError...
            raise ConvertError(f"{self.images.path}: the image of {what} cannot be decoded ({e})") from None
        if rgb.shape[:2] != (height, width):
            raise ConvertError(f"{self.images.path}: the image of {what} is {rgb.shape[1]}x{rgb.shape[0]}, its "
                               f"calibration in {self.cameras.path} says {width}x{height}")
        return rgb

    def world_points(self, time: int) -> np.ndarray:
        if self._sweep[0] != time:
            lasers = sorted(laser for t, laser in self.lidar.rows if t == time)
            if not lasers:
                raise ConvertError(f"{self.lidar.path}: no LiDAR rows at {time}")
            self._sweep = (time, np.concatenate([self._laser_points(time, laser) for laser in lasers]))
        return self._sweep[1]

    def _laser_points(self, time: int, laser: int) -> np.ndarray:
        """(N, 3) world points of one laser's first returns (range > 0, as Waymo's lidar_utils keeps)."""
        what = f"laser {laser} at {time}"
        ranges = self.lidar.grid(RANGE, self.lidar.row((time, laser), what), what)[..., 0]
        cal = self.lasers.row((laser,), f"laser {laser}")
        extrinsic = self.lasers.matrix(LASER_COLUMNS[0], cal, what)
        inclination = self.lasers.value(LASER_COLUMNS[3], cal)
        if inclination is None:  # no per-beam table: uniform between min and max (range_image_utils)
            low, high = (self.lasers.required(c, cal, what) for c in LASER_COLUMNS[1:3])
            inclination = low + (np.arange(ranges.shape[0]) + 0.5) / ranges.shape[0] * (high - low)
        if len(inclination) != ranges.shape[0]:
            raise ConvertError(f"{self.lasers.path}: laser {laser} has {len(inclination)} beam inclinations, its "
                               f"range image {ranges.shape[0]} rows")
        valid = ranges > 0
        points = range_image_to_vehicle(ranges, extrinsic, inclination)[valid]
        if (time, laser) in self.pixel_poses.rows:
            pose = self.pixel_poses.grid(PIXEL_POSE, self.pixel_poses.rows[(time, laser)], what)
            if pose.shape[:2] != ranges.shape:
                raise ConvertError(f"{self.pixel_poses.path}: the pose image of {what} is {pose.shape[:2]}, its "
                                   f"range image {ranges.shape}")
            pose = pose[valid]
            return np.einsum("nij,nj->ni", rotation(pose[:, 0], pose[:, 1], pose[:, 2]), points) + pose[:, 3:6]
        vehicle = self.vehicle_poses.row((time,), f"the vehicle pose at {time}")
        return transform_points(points, self.vehicle_poses.matrix(VEHICLE_POSE, vehicle, what))


def range_image_to_vehicle(ranges: np.ndarray, extrinsic: np.ndarray, inclination) -> np.ndarray:
    """(H, W, 3) vehicle-frame points of an (H, W) range image, as Waymo's range_image_utils: row r has the
    inclination inclination[H - 1 - r] (the table is ascending, row 0 the highest beam); column c the azimuth
    ((W - c - 0.5) / W * 2 - 1) * pi minus the laser's yaw atan2(E[1, 0], E[0, 0]); then the extrinsic E (laser ->
    vehicle)."""
    height, width = ranges.shape
    incl = np.asarray(inclination, dtype=np.float64)[::-1, None]
    azimuth = ((width - np.arange(width) - 0.5) / width * 2 - 1) * np.pi - math.atan2(extrinsic[1, 0],
                                                                                        extrinsic[0, 0])
    local = np.stack([np.cos(azimuth) * np.cos(incl) * ranges, np.sin(azimuth) * np.cos(incl) * ranges,
                      np.sin(incl) * ranges], axis=-1)
    return transform_points(local.reshape(-1, 3), extrinsic).reshape(height, width, 3)


def rotation(roll, pitch, yaw) -> np.ndarray:
    """(N, 3, 3) rotations Rz(yaw) Ry(pitch) Rx(roll): Waymo's transform_utils.get_rotation_matrix (roll applied
    first), the per-pixel vehicle -> world pose of lidar_pose."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    return np.stack([np.stack([cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr], -1),
                     np.stack([sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr], -1),
                     np.stack([-sp, cp * sr, cp * cr], -1)], -2)


def distort(u, v, k1, k2, p1, p2, k3):
    """Normalized pinhole coordinates -> distorted ones, and whether Waymo's model trusts them
    (camera_model.cc, DirectionToImage: radial 1 + k1 r^2 + k2 r^4 + k3 r^6 within [0.8, 1.2])."""
    r2 = u * u + v * v
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    return (u * radial + 2 * p1 * u * v + p2 * (r2 + 2 * u * u),
            v * radial + p1 * (r2 + 2 * v * v) + 2 * p2 * u * v,
            (radial >= 0.8) & (radial <= 1.2))


def undistort(rgb: np.ndarray, intrinsics: tuple, distortion) -> np.ndarray:
    """The image on the pinhole camera ``intrinsics`` (kit convention): each pixel's ray through the distortion into
    the source, sampled bilinearly (black where the ray leaves the image or the model)."""

    fx, fy, cx, cy = intrinsics
    height, width = rgb.shape[:2]
    u, v = np.meshgrid((np.arange(width) - cx) / fx, (np.arange(height) - cy) / fy)
    du, dv, trusted = distort(u, v, *distortion)
    return bilinear(rgb.astype(np.float32), np.where(trusted, du * fx + cx, -1.0),
                     np.where(trusted, dv * fy + cy, -1.0))
