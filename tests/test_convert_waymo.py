"""data convert waymo: a tiny v2 parquet segment written here (two lasers, two cameras, one frame) through the real
command line; the expected labels are worked out by hand below, the formula beside each number."""

import io
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from rlkit.convert.waymo import distort, rotation
from test_convert import convert, error_line, labels_of, rgb_image

SEGMENT, TIME = "seg1", 1000
W, H = 8, 6
# the one visible geometry, in the frame's vehicle frame (x forward, y left, z up):
# - the FRONT camera (1) sits at (1, 0, 2), unrotated; f 4, c_u 4.2, c_v 3.2 (pixel 0's left edge at 0), no distortion
#   -> kit cx = 3.7, cy = 2.7
# - the vehicle pose at the frame is a translation (100, 50, 0); the image was taken 0.5 m further: (100.5, 50, 0)
# - the TOP laser (1) sits at (1.5, 0, 2.5), turned 90 degrees left (yaw): its column 2 of 5 still looks along the
#   vehicle's x (Waymo corrects the azimuth by the laser's yaw); its per-pixel pose is (100.2, 50, 0): 0.2 m behind
#   the image. Two beams, inclinations A = atan2(-0.5, 4.8) and B = atan2(0.5, 3.8), table ascending, so row 0 is B.
#   camera frame of a return r at inclination i: x = 1.5 + r cos i + 100.2 - 100.5 - 1 = 0.2 + r cos i,
#   z = 2.5 + r sin i - 2 = 0.5 + r sin i; OpenCV: X = -y = 0, Y = -z, Z = x
#   A: r = hypot(4.8, 0.5): Z = 0.2 + 4.8 = 5, Y = -(0.5 - 0.5) = 0 -> (3.7, 2.7) -> pixel (4, 3), z 5
#   B: r = hypot(3.8, 0.5): Z = 0.2 + 3.8 = 4, Y = -(0.5 + 0.5) = -1 -> v = 2.7 + 4 * -1 / 4 = 1.7 -> pixel (4, 2), z 4
# - the FRONT laser (2) sits at (2, 0, 2), unrotated, one row at inclination 0 (uniform between -0.2 and 0.2), no
#   per-pixel pose (the vehicle pose): column 2, r = 9.5: camera x = 2 + 9.5 + 100 - 100.5 - 1 = 10, z = 0 ->
#   pixel (4, 3) at z 10, behind A: the z-buffer drops it (occluded); column 0 (azimuth 0.8 pi) points backwards.
INCL_A, INCL_B = math.atan2(-0.5, 4.8), math.atan2(0.5, 3.8)


def translation(x, y, z, yaw=0.0):
    c, s = math.cos(yaw), math.sin(yaw)
    return [c, -s, 0, x, s, c, 0, y, 0, 0, 1, z, 0, 0, 0, 1]


TRANSFORM = pa.list_(pa.float64(), 16)
SHAPE = pa.list_(pa.int32(), 3)


def write(path, columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({name: pa.array(values, type=kind) for name, (values, kind) in columns.items()}), path)


def jpeg(array):
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def key(n, **extra):
    cols = {"key.segment_context_name": ([SEGMENT] * n, pa.string())}
    cols.update({f"key.{k}": (v, kind) for k, (v, kind) in extra.items()})
    return cols


def write_segment(root, cameras=(1, 2), calibrated=(1, 2)):
    """Camera 2 (FRONT_LEFT) looks left, at (1, 0, 2): every point is beside it (camera z 0), so it gets no label."""
    n = len(cameras)
    write(root / "camera_image" / f"{SEGMENT}.parquet", {
        **key(n, frame_timestamp_micros=([TIME] * n, pa.int64()), camera_name=(list(cameras), pa.int8())),
        "[CameraImageComponent].image": ([jpeg(rgb_image(W, H, seed=c)) for c in cameras], pa.binary()),
        "[CameraImageComponent].pose.transform": ([translation(100.5, 50, 0)] * n, TRANSFORM)})
    cal = "[CameraCalibrationComponent]."
    m = len(calibrated)
    intrinsic = {"f_u": 4.0, "f_v": 4.0, "c_u": 4.2, "c_v": 3.2, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "k3": 0.0}
    write(root / "camera_calibration" / f"{SEGMENT}.parquet", {
        **key(m, camera_name=(list(calibrated), pa.int8())),
        **{f"{cal}intrinsic.{k}": ([v] * m, pa.float64()) for k, v in intrinsic.items()},
        f"{cal}extrinsic.transform": ([translation(1, 0, 2, yaw=(c - 1) * math.pi / 2) for c in calibrated],
                                      TRANSFORM),
        f"{cal}width": ([W] * m, pa.int32()), f"{cal}height": ([H] * m, pa.int32())})
    top = np.zeros((2, 5, 4), np.float32)
    top[0, 2, 0], top[1, 2, 0] = math.hypot(3.8, 0.5), math.hypot(4.8, 0.5)  # rows: B (highest) then A
    front = np.zeros((1, 5, 4), np.float32)
    front[0, 2, 0], front[0, 0, 0] = 9.5, 3.0
    write(root / "lidar" / f"{SEGMENT}.parquet", {
        **key(2, frame_timestamp_micros=([TIME] * 2, pa.int64()), laser_name=([1, 2], pa.int8())),
        "[LiDARComponent].range_image_return1.values": ([top.ravel().tolist(), front.ravel().tolist()],
                                                        pa.list_(pa.float32())),
        "[LiDARComponent].range_image_return1.shape": ([[2, 5, 4], [1, 5, 4]], SHAPE)})
    las = "[LiDARCalibrationComponent]."
    write(root / "lidar_calibration" / f"{SEGMENT}.parquet", {
        **key(2, laser_name=([1, 2], pa.int8())),
        f"{las}extrinsic.transform": ([translation(1.5, 0, 2.5, yaw=math.pi / 2), translation(2, 0, 2)], TRANSFORM),
        f"{las}beam_inclination.min": ([-0.3, -0.2], pa.float64()),
        f"{las}beam_inclination.max": ([0.3, 0.2], pa.float64()),
        f"{las}beam_inclination.values": ([[INCL_A, INCL_B], None], pa.list_(pa.float64()))})
    pose = np.tile(np.array([0, 0, 0, 100.2, 50, 0], np.float32), (2, 5, 1))  # roll pitch yaw x y z per pixel
    write(root / "lidar_pose" / f"{SEGMENT}.parquet", {
        **key(1, frame_timestamp_micros=([TIME], pa.int64()), laser_name=([1], pa.int8())),
        "[LiDARPoseComponent].range_image_return1.values": ([pose.ravel().tolist()], pa.list_(pa.float32())),
        "[LiDARPoseComponent].range_image_return1.shape": ([[2, 5, 6]], SHAPE)})
    write(root / "vehicle_pose" / f"{SEGMENT}.parquet", {
        **key(1, frame_timestamp_micros=([TIME], pa.int64())),
        "[VehiclePoseComponent].world_from_vehicle.transform": ([translation(100, 50, 0)], TRANSFORM)})
    return root


def test_waymo_segment_by_hand(tmp_path, capsys):
    src = write_segment(tmp_path / "training")
    out = tmp_path / "out" / "waymo.jsonl"
    assert convert("waymo", src, "--out", out, "--margin", 1) == 0
    assert "no_valid_pixel 1" in capsys.readouterr().out  # camera 2 sees nothing
    records, got = labels_of(out)
    assert len(records) == 1 and records[0].image.name == "1000_1.png" and records[0].extras["scene"] == SEGMENT
    assert records[0].camera.as_list() == pytest.approx([4.0, 4.0, 3.7, 2.7, 8, 6])  # c - 0.5
    # depth = z * sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + 1)
    assert got == {
        (4, 2): (pytest.approx(4.071854614300467, abs=1e-5), pytest.approx(4.0, abs=1e-5)),  # 4 * sqrt(1.03625)
        (4, 3): (pytest.approx(5.028046340279691, abs=1e-5), pytest.approx(5.0, abs=1e-5)),  # 5 * sqrt(1.01125)
    }  # (4, 3): z 5 of the TOP laser, not the FRONT laser's 10 behind it
    # no distortion: the undistorted image is the JPEG's pixels
    source = np.asarray(Image.open(io.BytesIO(jpeg(rgb_image(W, H, seed=1)))).convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(records[0].image)), source)


def test_rotation_and_distortion_by_hand():
    # roll then yaw, 90 degrees each: x -> x -> y, y -> z -> z, z -> -y -> x
    assert rotation(np.array([math.pi / 2]), np.array([0.0]), np.array([math.pi / 2]))[0] == pytest.approx(
        np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]), abs=1e-12)
    # radial: r^2 = 0.25, 1 + 0.1 * 0.25 = 1.025 -> 0.5125; tangential p1 0.01 at (0.5, 0.5), r^2 = 0.5:
    # u + 2 p1 u v = 0.5 + 0.005, v + p1 (r^2 + 2 v^2) = 0.5 + 0.01
    u, v, ok = distort(np.array([0.5, 0.5]), np.array([0.0, 0.5]), 0.1, 0, 0, 0, 0)
    assert u[0] == pytest.approx(0.5125) and v[0] == 0 and ok.all()
    u, v, _ = distort(0.5, 0.5, 0, 0, 0.01, 0, 0)
    assert (u, v) == (pytest.approx(0.505), pytest.approx(0.51))
    assert not distort(1.0, 0.0, 0.5, 0, 0, 0, 0)[2]  # radial 1.5: beyond what Waymo's model trusts


def test_waymo_bad_inputs_are_one_line_errors(tmp_path, capsys):
    src = write_segment(tmp_path / "a", cameras=(1, 3), calibrated=(1,))
    out = tmp_path / "out" / "w.jsonl"
    assert convert("waymo", src, "--out", out, "--margin", 1) == 2
    err = error_line(capsys.readouterr().err)
    assert f"{src / 'camera_calibration' / 'seg1.parquet'}: no row for camera 3" in err
    assert not out.parent.exists() or sorted(out.parent.iterdir()) == []

    src = write_segment(tmp_path / "b")
    lidar = src / "lidar" / "seg1.parquet"
    lidar.write_bytes(lidar.read_bytes()[:200])  # cut
    assert convert("waymo", src, "--out", out) == 2
    assert f"{lidar}: not a readable parquet file" in error_line(capsys.readouterr().err)

    (src / "lidar_pose" / "seg1.parquet").unlink()
    assert convert("waymo", src, "--out", out) == 2
    assert "the lidar_pose component is missing" in error_line(capsys.readouterr().err)


def test_a_transform_that_is_not_4x4_is_a_one_line_error(tmp_path, capsys):
    src = write_segment(tmp_path / "a")
    path = src / "vehicle_pose" / f"{SEGMENT}.parquet"
    write(path, {**key(1, frame_timestamp_micros=([TIME], pa.int64())),
                 "[VehiclePoseComponent].world_from_vehicle.transform": ([[1.0] * 12], pa.list_(pa.float64()))})
    (src / "lidar_pose" / f"{SEGMENT}.parquet").unlink()  # the vehicle pose is then the one read
    write(src / "lidar_pose" / f"{SEGMENT}.parquet", {
        **key(0, frame_timestamp_micros=([], pa.int64()), laser_name=([], pa.int8())),
        "[LiDARPoseComponent].range_image_return1.values": ([], pa.list_(pa.float32())),
        "[LiDARPoseComponent].range_image_return1.shape": ([], SHAPE)})
    out = tmp_path / "out" / "w.jsonl"
    assert convert("waymo", src, "--out", out) == 2
    err = error_line(capsys.readouterr().err)
    assert f"{path}: [VehiclePoseComponent].world_from_vehicle.transform" in err and "not 16 finite numbers" in err
