"""data convert scannetpp | matterport3d: each dataset's native layout written here, a few depth values whose labels
are worked out by hand (the formula beside each number), converted through the real command line and loaded back
through data check."""

import json

import numpy as np
import pytest
from PIL import Image

from test_convert import convert, error_line, labels_of, rgb_image

# depth = z * sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + 1) everywhere below

SCENE = "0a5c013435"


def write_scannetpp(root):
    """One scene, frames 0, 5 and 10 of a 12x9 RGB stream with 4x3 depth (3x): depth pixel (i, j) labels the RGB pixel
    ((j + 0.5) * 3 - 0.5, (i + 0.5) * 3 - 0.5) = (3 j + 1, 3 i + 1)."""
    iphone = root / "data" / SCENE / "iphone"
    for sub in ("rgb", "depth", "rgb_masks"):
        (iphone / sub).mkdir(parents=True)
    depths = {0: {(1, 1): 2000, (0, 2): 1500, (2, 3): 3000}, 5: {(1, 1): 1000}, 10: {(1, 2): 2500}}  # (i, j): mm
    for n, values in depths.items():
        frame = f"frame_{n:06d}"
        Image.fromarray(rgb_image(12, 9, seed=n)).save(iphone / "rgb" / f"{frame}.jpg", quality=95)
        mm = np.zeros((3, 4), np.uint16)
        for (i, j), v in values.items():
            mm[i, j] = v
        Image.fromarray(mm).save(iphone / "depth" / f"{frame}.png")
        mask = np.full((9, 12), 255, np.uint8)
        mask[7, 10] = 0  # anonymized: the RGB pixel of frame 0's depth pixel (2, 3)
        Image.fromarray(mask).save(iphone / "rgb_masks" / f"{frame}.png")
    k0 = [[6, 0, 5.5], [0, 6, 4], [0, 0, 1]]
    k10 = [[5, 0, 5.5], [0, 5, 4], [0, 0, 1]]
    (iphone / "pose_intrinsic_imu.json").write_text(json.dumps({
        f"frame_{n:06d}": {"intrinsic": k, "aligned_pose": np.eye(4).tolist(), "pose": np.eye(4).tolist()}
        for n, k in ((0, k0), (5, k0), (10, k10))}))
    return root / "data"


def test_scannetpp_iphone_by_hand(tmp_path):
    src = write_scannetpp(tmp_path)
    out = tmp_path / "out" / "scannetpp.jsonl"
    assert convert("scannetpp", src, "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    # frame 5 is not a multiple of 10: not converted
    assert [r.image.name for r in records] == ["frame_000000.jpg", "frame_000010.jpg"]
    assert records[0].extras["scene"] == SCENE and records[0].camera.as_list() == [6.0, 6.0, 5.5, 4.0, 12, 9]
    assert records[1].camera.as_list() == [5.0, 5.0, 5.5, 4.0, 12, 9]  # each frame its own K
    assert got == {
        (4, 4): (pytest.approx(2.0615528128088303, abs=1e-6), 2.0),  # frame 0, depth (1, 1): 2 * sqrt(0.25^2 + 1)
        (7, 1): (pytest.approx(1.71846588560844, abs=1e-6), 1.5),  # (0, 2): 1.5 * sqrt(0.25^2 + 0.5^2 + 1)
        (7, 4): (pytest.approx(2.6100766272276377, abs=1e-6), 2.5),  # frame 10, (1, 2): 2.5 * sqrt(0.3^2 + 1)
    }  # frame 0's (2, 3), 3 m, lands on the anonymized pixel (10, 7): never labeled
    side = json.loads((out.parent / "scannetpp.convert.json").read_text())
    assert side["pixels"]["masked"] == 1 and side["depth_kind_read"] == "z"


def test_scannetpp_bad_inputs_are_one_line_errors(tmp_path, capsys):
    src = write_scannetpp(tmp_path)
    out = tmp_path / "out" / "s.jsonl"
    iphone = src / SCENE / "iphone"
    depth = iphone / "depth" / "frame_000010.png"
    depth.write_bytes(depth.read_bytes()[:40])  # cut
    assert convert("scannetpp", src, "--out", out) == 2
    assert f"{depth}" in error_line(capsys.readouterr().err)
    assert not out.exists()
    frames = json.loads((iphone / "pose_intrinsic_imu.json").read_text())
    del frames["frame_000010"]
    (iphone / "pose_intrinsic_imu.json").write_text(json.dumps(frames))
    assert convert("scannetpp", src, "--out", out) == 2
    assert f"{iphone / 'pose_intrinsic_imu.json'}: no entry for frame_000010" in error_line(capsys.readouterr().err)


SCAN = "17DRP5sb8fy"
POSE = " ".join(["1 0 0 0  0 1 0 0  0 0 1 0  0 0 0 1"])


def write_matterport(root, n_images=2):
    """Two 8x6 images, each with its own intrinsics_matrix line (the .conf's cy counts from the bottom row)."""
    scan = root / "v1" / "scans" / SCAN
    for sub in ("undistorted_camera_parameters", "undistorted_color_images", "undistorted_depth_images"):
        (scan / sub).mkdir(parents=True)
    (scan / "undistorted_camera_parameters" / f"{SCAN}.conf").write_text(
        f"dataset matterport\nn_images {n_images}\ndepth_directory undistorted_depth_images\n"
        "color_directory undistorted_color_images\n\n"
        f"intrinsics_matrix 4 0 4  0 5 3.2  0 0 1\nscan pano_d1_0.png pano_i1_0.jpg {POSE}\n"
        f"intrinsics_matrix 5 0 4.5  0 5 3  0 0 1\nscan pano_d2_0.png pano_i2_0.jpg {POSE}\n")
    for n, values in ((1, {(2, 3): 8000, (4, 5): 12000}), (2, {(1, 1): 4000})):  # (row, col): 0.25 mm units
        Image.fromarray(rgb_image(8, 6, seed=n)).save(scan / "undistorted_color_images" / f"pano_i{n}_0.jpg")
        depth = np.zeros((6, 8), np.uint16)
        for (y, x), v in values.items():
            depth[y, x] = v
        Image.fromarray(depth).save(scan / "undistorted_depth_images" / f"pano_d{n}_0.png")
    return root, scan


def test_matterport3d_by_hand(tmp_path):
    src, _ = write_matterport(tmp_path)
    out = tmp_path / "out" / "mp3d.jsonl"
    assert convert("matterport3d", src, "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    assert [r.image.name for r in records] == ["pano_i1_0.jpg", "pano_i2_0.jpg"]
    # cx - 0.5, H - cy - 0.5: (4 - 0.5, 6 - 3.2 - 0.5) and (4.5 - 0.5, 6 - 3 - 0.5)
    assert records[0].camera.as_list() == pytest.approx([4.0, 5.0, 3.5, 2.3, 8, 6])
    assert records[1].camera.as_list() == pytest.approx([5.0, 5.0, 4.0, 2.5, 8, 6])
    assert records[0].extras["scene"] == SCAN
    assert got == {
        (3, 2): (pytest.approx(2.0191334775095973, abs=1e-6), 2.0),  # 8000 / 4000; 2 * sqrt(0.125^2 + 0.06^2 + 1)
        (5, 4): (pytest.approx(3.3624433080722715, abs=1e-6), 3.0),  # 12000 / 4000; 3 * sqrt(0.375^2 + 0.34^2 + 1)
        (1, 1): (pytest.approx(1.2041594578792296, abs=1e-6), 1.0),  # image 2: sqrt(0.6^2 + 0.3^2 + 1)
    }


def test_matterport3d_bad_inputs_are_one_line_errors(tmp_path, capsys):
    src, scan = write_matterport(tmp_path, n_images=3)
    conf = scan / "undistorted_camera_parameters" / f"{SCAN}.conf"
    out = tmp_path / "out" / "m.jsonl"
    assert convert("matterport3d", src, "--out", out) == 2
    assert f"{conf}: n_images is 3 but it has 2 scan lines" in error_line(capsys.readouterr().err)
    src, scan = write_matterport(tmp_path / "b")
    (scan / "undistorted_color_images" / "pano_i2_0.jpg").unlink()
    assert convert("matterport3d", src, "--out", out) == 2
    assert "the color image of scan line pano_i2_0.jpg is missing" in error_line(capsys.readouterr().err)
    assert not out.exists()
