"""data convert argoverse2 | nuscenes | ddad: each driving set's native layout written by the test, with a handful of
LiDAR points whose pixels and depths are computed by hand (written out, the formula beside), converted through the
command line and loaded back through data check; and the shared z-buffer (rlkit.convert.lidar) on its own."""

import json

import numpy as np
import pytest
from PIL import Image

from rlkit.cli import main
from rlkit.convert.lidar import zbuffer_depth
from rlkit.records import load_records

W, H = 8, 6
K = (4.0, 4.0, 3.5, 2.5)  # fx fy cx cy: the camera point (x, y, z) lands at (4 x / z + 3.5, 4 y / z + 2.5)
R2 = 0.7071067811865476  # sqrt(1/2): the quaternion (w, x, y, z) = (R2, 0, 0, R2) turns 90 degrees about z (yaw)

# The points every fixture holds, in its own sensor's frame; here in the camera's (x right, y down, z forward):
CAM_POINTS = [
    (1, 1, 8),  # A: (4 * 1/8 + 3.5, 4 * 1/8 + 2.5) = pixel (4, 3), z 8
    (2, 2, 16),  # B: pixel (4, 3) too, z 16, seen through A: the z-buffer drops it (written after A on purpose)
    (-1.5, -0.5, 4),  # C: (4 * -1.5/4 + 3.5, 4 * -0.5/4 + 2.5) = pixel (2, 2), z 4
    (1, 1, -8),  # D: behind the camera (it would land on (3, 3) with the sign ignored): dropped
    (10, 0, 5),  # E: (4 * 10/5 + 3.5, 2.5) = (11.5, 2.5), right of the 8-pixel-wide image: dropped
]
# Every fixture converts to these labels (--margin 1): {(x, y): (depth, axis_depth)},
# depth = z * sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + 1)
EXPECTED = {(4, 3): (8.12403840463596, 8.0),  # 8 * sqrt(0.125^2 + 0.125^2 + 1)
            (2, 2): (4.301162633521313, 4.0)}  # 4 * sqrt(0.375^2 + 0.125^2 + 1)

# The rig of all three: the camera sits at (1.5, 0, 1.5) of the car (x forward, y left, z up) looking forward,
# rotation (w, x, y, z) = (0.5, -0.5, 0.5, -0.5), i.e. car = (z, -x, -y) of the camera + (1.5, 0, 1.5); a camera
# point (x, y, z) is the car point (z + 1.5, -x, 1.5 - y).
CAMERA_ROTATION, CAMERA_TRANSLATION = (0.5, -0.5, 0.5, -0.5), (1.5, 0.0, 1.5)


def image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def convert(*args):
    return main(["data", "convert", *map(str, args)])


def check(out):
    """The converted jsonl passes data check and holds EXPECTED, nothing else; its records."""
    assert main(["data", "check", str(out)]) == 0
    records, _ = load_records(out)
    got = {}
    for rec in records:
        assert rec.camera.as_list() == [*K, W, H]
        for (x, y), d, z in zip(rec.pixels.tolist(), rec.depth, rec.extras["axis_depth"]):
            got[(int(x), int(y))] = (float(d), float(z))
    assert got.keys() == EXPECTED.keys()
    for pixel, (d, z) in EXPECTED.items():
        assert got[pixel] == (pytest.approx(d, abs=1e-5), pytest.approx(z, abs=1e-5)), pixel
    return records


def error_line(err):
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_zbuffer_keeps_the_nearest_point_of_each_pixel():
    points = np.array(CAM_POINTS, dtype=np.float64)
    depth = zbuffer_depth(points, K, W, H)
    assert depth.shape == (H, W) and depth.dtype == np.float32
    assert depth[3, 4] == 8.0 and depth[2, 2] == 4.0  # A, not B behind it; C
    assert np.isfinite(depth).sum() == 2 and np.isnan(depth[3, 3])  # D (behind) and E (outside) land nowhere
    assert np.array_equal(zbuffer_depth(points[::-1], K, W, H), depth, equal_nan=True)  # in any order
    # a point 0.4 m ahead in A's pixel, (4 * 0.05/0.4 + 3.5, 4 * 0.05/0.4 + 2.5) = (4, 3), wins; min_depth drops it
    near = np.vstack([points, [0.05, 0.05, 0.4]])
    assert zbuffer_depth(near, K, W, H)[3, 4] == pytest.approx(0.4)
    assert zbuffer_depth(near, K, W, H, min_depth=1.0)[3, 4] == 8.0


# ----------------------------------------------------------------------------------------------------------------
# Argoverse 2: sweeps hold car-frame points at the sweep's time. The car turned 90 degrees in the city (yaw) and drove
# 1 m forward (city +y = car +x) between the sweep (city (10, 19, 0)) and the image (city (10, 20, 0)): a point's car
# coordinates at the sweep's time are 1 m further ahead, (z + 2.5, -x, 1.5 - y) of its camera coordinates.
AV2_SWEEP = [(10.5, -1, 0.5), (18.5, -2, -0.5), (6.5, 1.5, 2.0), (-5.5, -1, 0.5), (7.5, -10, 1.5)]  # A B C D E
T_SWEEP, T_IMAGE = 1_000_000_000, 1_040_000_000  # 40 ms apart: the nearest sweep, within av2's 51 ms
T_SWEEP2, T_LATE = 1_100_000_000, 1_160_000_000  # the late image's nearest sweep is 60 ms away: not listed


def feather(path, columns):
    import pyarrow as pa
    from pyarrow import feather as pf

    path.parent.mkdir(parents=True, exist_ok=True)
    pf.write_feather(pa.table(columns), path)


@pytest.fixture
def av2_log(tmp_path):
    log = tmp_path / "val" / "log-0001"
    cam = "ring_front_center"
    feather(log / "calibration" / "intrinsics.feather",
            {"sensor_name": [cam], "fx_px": [4.0], "fy_px": [4.0], "cx_px": [3.5], "cy_px": [2.5], "k1": [0.0],
             "k2": [0.0], "k3": [0.0], "height_px": [H], "width_px": [W]})
    feather(log / "calibration" / "egovehicle_SE3_sensor.feather",
            {"sensor_name": [cam], **{k: [v] for k, v in zip(("qw", "qx", "qy", "qz"), CAMERA_ROTATION)},
             **{k: [v] for k, v in zip(("tx_m", "ty_m", "tz_m"), CAMERA_TRANSLATION)}})
    feather(log / "city_SE3_egovehicle.feather",
            {"timestamp_ns": np.array([T_SWEEP, T_IMAGE], np.int64), "qw": [R2, R2], "qx": [0.0, 0.0],
             "qy": [0.0, 0.0], "qz": [R2, R2], "tx_m": [10.0, 10.0], "ty_m": [19.0, 20.0], "tz_m": [0.0, 0.0]})
    sweep = np.array(AV2_SWEEP, np.float16)  # float16, as the released sweeps
    for t in (T_SWEEP, T_SWEEP2):
        feather(log / "sensors" / "lidar" / f"{t}.feather",
                {"x": sweep[:, 0], "y": sweep[:, 1], "z": sweep[:, 2], "intensity": np.zeros(5, np.uint8)})
    for t in (T_IMAGE, T_LATE):
        image(log / "sensors" / "cameras" / cam / f"{t}.jpg")
    return log


def test_argoverse2(av2_log, tmp_path, caplog):
    out = tmp_path / "out" / "av2.jsonl"
    assert convert("argoverse2", av2_log.parent, "--out", out, "--margin", 1) == 0
    records = check(out)
    assert [r.image.name for r in records] == [f"{T_IMAGE}.jpg"] and records[0].extras["scene"] == "log-0001"
    assert records[0].image.parent.as_posix().endswith("rgb/log-0001/ring_front_center")
    assert "1 images have no LiDAR sweep within 51 ms" in caplog.text  # T_LATE
    assert json.loads((out.parent / "av2.convert.json").read_text())["depth_kind_read"] == "z"


def test_argoverse2_leaves_out_files_not_named_by_their_time(av2_log, tmp_path, caplog):
    image(av2_log / "sensors" / "cameras" / "ring_front_center" / "thumb.jpg")  # a stray file, not a frame
    (av2_log / "sensors" / "lidar" / "notes.feather").write_bytes(b"x")
    out = tmp_path / "out" / "av2.jsonl"
    assert convert("argoverse2", av2_log.parent, "--out", out, "--margin", 1) == 0
    assert [r.image.name for r in check(out)] == [f"{T_IMAGE}.jpg"]
    assert "1 files not named TIMESTAMP_NS left out (e.g. thumb.jpg)" in caplog.text
    assert "1 files not named TIMESTAMP_NS left out (e.g. notes.feather)" in caplog.text


@pytest.mark.parametrize("breakage", ["calibration_row", "cut_sweep"])
def test_argoverse2_bad_inputs_are_one_line_errors(av2_log, tmp_path, capsys, breakage):
    if breakage == "calibration_row":  # images of a camera intrinsics.feather has no row for
        image(av2_log / "sensors" / "cameras" / "ring_front_left" / f"{T_IMAGE}.jpg")
        expected = f"{av2_log / 'calibration' / 'intrinsics.feather'}: no row with sensor_name 'ring_front_left'"
    else:
        sweep = av2_log / "sensors" / "lidar" / f"{T_SWEEP}.feather"
        sweep.write_bytes(sweep.read_bytes()[:100])
        expected = f"{sweep}: cannot be read as a feather table"
    out = tmp_path / "out" / "x.jsonl"
    assert convert("argoverse2", av2_log.parent, "--out", out, "--margin", 1) == 2
    assert expected in error_line(capsys.readouterr().err)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# nuScenes: LIDAR_TOP points in the LiDAR's frame, which sits at (0, 0, 1.8) of the car turned 90 degrees (yaw):
# car = (-y, x, z) of the LiDAR + (0, 0, 1.8). The ego poses move the car as for Argoverse 2 (sweep at city
# (10, 19, 0), image at (10, 20, 0), both turned 90 degrees), so the car point at the sweep's time is
# (z + 2.5, -x, 1.5 - y) and the LiDAR point (-x, -z - 2.5, -y - 0.3).
NUSC_SWEEP = [(-1, -10.5, -1.3), (-2, -18.5, -2.3), (1.5, -6.5, 0.2), (-1, 5.5, -1.3), (-10, -7.5, -0.3),  # A-E
              (-0.05, -2.9, -0.35)]  # F: camera (0.05, 0.05, 0.4), A's pixel (4, 3) at 0.4 m: under the devkit's 1 m
CAM_FILE, LIDAR_FILE = "samples/CAM_FRONT/n000__CAM_FRONT__1.jpg", "samples/LIDAR_TOP/n000__LIDAR_TOP__1.pcd.bin"


@pytest.fixture
def nusc_root(tmp_path):
    root = tmp_path / "nuscenes"
    tables = {
        "sensor": [{"token": "s-cam", "channel": "CAM_FRONT", "modality": "camera"},
                   {"token": "s-lidar", "channel": "LIDAR_TOP", "modality": "lidar"}],
        "calibrated_sensor": [
            {"token": "cs-cam", "sensor_token": "s-cam", "rotation": list(CAMERA_ROTATION),
             "translation": list(CAMERA_TRANSLATION), "camera_intrinsic": [[4, 0, 3.5], [0, 4, 2.5], [0, 0, 1]]},
            {"token": "cs-lidar", "sensor_token": "s-lidar", "rotation": [R2, 0, 0, R2], "translation": [0, 0, 1.8],
             "camera_intrinsic": []}],
        "ego_pose": [{"token": "ep-lidar", "timestamp": 1, "rotation": [R2, 0, 0, R2], "translation": [10, 19, 0]},
                     {"token": "ep-cam", "timestamp": 2, "rotation": [R2, 0, 0, R2], "translation": [10, 20, 0]}],
        "scene": [{"token": "sc", "name": "scene-0061"}],
        "sample": [{"token": "smp", "timestamp": 1, "scene_token": "sc", "prev": "", "next": ""}],
        "sample_data": [
            {"token": "sd-lidar", "sample_token": "smp", "ego_pose_token": "ep-lidar",
             "calibrated_sensor_token": "cs-lidar", "is_key_frame": True, "width": 0, "height": 0,
             "filename": LIDAR_FILE},
            {"token": "sd-cam", "sample_token": "smp", "ego_pose_token": "ep-cam", "calibrated_sensor_token": "cs-cam",
             "is_key_frame": True, "width": W, "height": H, "filename": CAM_FILE},
            {"token": "sd-sweep", "sample_token": "smp", "ego_pose_token": "ep-cam",  # not a keyframe: not listed
             "calibrated_sensor_token": "cs-cam", "is_key_frame": False, "width": W, "height": H,
             "filename": "sweeps/CAM_FRONT/n000__CAM_FRONT__2.jpg"}],
    }
    (root / "v1.0-mini").mkdir(parents=True)
    for name, rows in tables.items():
        (root / "v1.0-mini" / f"{name}.json").write_text(json.dumps(rows))
    points = np.zeros((len(NUSC_SWEEP), 5), "<f4")  # x y z intensity ring
    points[:, :3] = NUSC_SWEEP
    (root / LIDAR_FILE).parent.mkdir(parents=True)
    points.tofile(root / LIDAR_FILE)
    image(root / CAM_FILE)
    return root


def test_nuscenes(nusc_root, tmp_path):
    out = tmp_path / "out" / "nusc.jsonl"
    assert convert("nuscenes", nusc_root, "--out", out, "--margin", 1) == 0
    records = check(out)
    assert len(records) == 1 and records[0].extras["scene"] == "scene-0061"
    assert records[0].image.as_posix().endswith("rgb/samples/CAM_FRONT/n000__CAM_FRONT__1.jpg")
    # the table folder itself is a SOURCE too
    assert convert("nuscenes", nusc_root / "v1.0-mini", "--out", tmp_path / "o2" / "n.jsonl", "--margin", 1) == 0


@pytest.mark.parametrize("breakage", ["calibration_row", "cut_sweep"])
def test_nuscenes_bad_inputs_are_one_line_errors(nusc_root, tmp_path, capsys, breakage):
    if breakage == "calibration_row":
        table = nusc_root / "v1.0-mini" / "calibrated_sensor.json"
        table.write_text(json.dumps([r for r in json.loads(table.read_text()) if r["token"] != "cs-cam"]))
        expected = f"{table}: no record with token cs-cam (the calibration of {CAM_FILE})"
    else:
        sweep = nusc_root / LIDAR_FILE
        sweep.write_bytes(sweep.read_bytes()[:-4])  # 29 float32 values
        expected = f"{sweep}: 29 float32 values, not a multiple of 5"
    out = tmp_path / "out" / "x.jsonl"
    assert convert("nuscenes", nusc_root, "--out", out, "--margin", 1) == 2
    assert expected in error_line(capsys.readouterr().err)
    assert not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# DDAD: each datum's pose is its sensor's in the scene's world frame. The camera's is the rig above; the LiDAR's
# turns 90 degrees (yaw) at (1, 0, 0): world = (-y, x, z) of the LiDAR + (1, 0, 0). The camera point (x, y, z) is the
# world point (z + 1.5, -x, 1.5 - y), so the LiDAR point (-x, -z - 0.5, 1.5 - y).
DDAD_CLOUD = [(-1, -8.5, 0.5), (-2, -16.5, -0.5), (1.5, -4.5, 2.0), (-1, 7.5, 0.5), (-10, -5.5, 1.5)]  # A B C D E


def pose(rotation, translation):
    return {"rotation": dict(zip(("qw", "qx", "qy", "qz"), rotation)), "translation": dict(zip("xyz", translation))}


@pytest.fixture
def ddad_json(tmp_path, request):
    root = tmp_path / "ddad_train_val"
    scene = root / "000150"
    lidar_pose = pose([R2, 0, 0, R2], [1, 0, 0])
    del lidar_pose["rotation"]["qx"], lidar_pose["translation"]["z"]  # proto3 JSON may leave zeros out
    data = [{"key": "k-lidar", "id": {"name": "LIDAR"},
             "datum": {"point_cloud": {"filename": "point_cloud/LIDAR/1.npz", "point_format": ["X", "Y", "Z"],
                                       "pose": lidar_pose}}},
            {"key": "k-cam", "id": {"name": "CAMERA_01"},
             "datum": {"image": {"filename": "rgb/CAMERA_01/1.png", "width": W, "height": H, "channels": 3,
                                 "pose": pose(CAMERA_ROTATION, CAMERA_TRANSLATION)}}}]
    (scene / "calibration").mkdir(parents=True)
    (scene / "scene_abc.json").write_text(json.dumps(
        {"data": data, "samples": [{"calibration_key": "c0", "datum_keys": ["k-lidar", "k-cam"]}]}))
    (scene / "calibration" / "c0.json").write_text(json.dumps(
        {"names": ["LIDAR", "CAMERA_01"], "intrinsics": [{}, {"fx": 4, "fy": 4, "cx": 3.5, "cy": 2.5, "skew": 0}],
         "extrinsics": [pose([1, 0, 0, 0], [0, 0, 0])] * 2}))
    (root / "ddad.json").write_text(json.dumps({"scene_splits": {"0": {"filenames": []},
                                                                 "1": {"filenames": ["000150/scene_abc.json"]}}}))
    cloud = np.array(DDAD_CLOUD, np.float32)
    if getattr(request, "param", "structured") == "structured":  # fields X Y Z (INTENSITY)
        cloud = np.rec.fromarrays([cloud[:, 0], cloud[:, 1], cloud[:, 2], np.zeros(5, np.float32)],
                                  names="X,Y,Z,INTENSITY")
    (scene / "point_cloud" / "LIDAR").mkdir(parents=True)
    np.savez_compressed(scene / "point_cloud" / "LIDAR" / "1.npz", data=np.asarray(cloud))
    image(scene / "rgb" / "CAMERA_01" / "1.png")
    return root / "ddad.json"


@pytest.mark.parametrize("ddad_json", ["structured", "columns"], indirect=True)
def test_ddad(ddad_json, tmp_path, capsys):
    out = tmp_path / "out" / "ddad.jsonl"
    assert convert("ddad", ddad_json, "--out", out, "--margin", 1) == 0
    records = check(out)
    assert records[0].extras["scene"] == "000150"
    assert records[0].image.as_posix().endswith("rgb/000150/rgb/CAMERA_01/1.png")
    assert convert("ddad", ddad_json, "--split", "train", "--out", tmp_path / "t.jsonl") == 2  # no training scene
    assert "the train scenes" in error_line(capsys.readouterr().err)


@pytest.mark.parametrize("breakage", ["calibration_row", "cut_cloud"])
def test_ddad_bad_inputs_are_one_line_errors(ddad_json, tmp_path, capsys, breakage):
    scene = ddad_json.parent / "000150"
    if breakage == "calibration_row":
        calib = scene / "calibration" / "c0.json"
        calib.write_text(json.dumps({"names": ["LIDAR"], "intrinsics": [{}], "extrinsics": []}))
        expected = f"{calib}: no intrinsics for CAMERA_01"
    else:
        cloud = scene / "point_cloud" / "LIDAR" / "1.npz"
        cloud.write_bytes(cloud.read_bytes()[:60])
        expected = f"{cloud}: cannot be read as a DGP point cloud"
    out = tmp_path / "out" / "x.jsonl"
    assert convert("ddad", ddad_json, "--out", out, "--margin", 1) == 2
    assert expected in error_line(capsys.readouterr().err)
    assert not out.exists()
