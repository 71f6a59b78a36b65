"""data convert: the generic converter and each adapter on a tiny fixture in its native format, with labels
computed by hand (the expected numbers are written out; the formula beside each)."""

import json

import numpy as np
import pytest
from PIL import Image

from rlkit.cli import main
from rlkit.convert.adapters import colmap_project, sunrgbd_decode
from rlkit.records import load_records

W, H = 8, 6


def rgb_image(width=W, height=H, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def labels_of(out):
    """{(x, y): (depth, axis_depth)} of every label in a converted jsonl, loaded by the kit (after data check: every
    line valid, every image opened whole and sized against its intrinsics)."""
    assert main(["data", "check", str(out)]) == 0
    records, _ = load_records(out)
    got = {}
    for rec in records:
        for (x, y), d, z in zip(rec.pixels.tolist(), rec.depth, rec.extras["axis_depth"]):
            got[(int(x), int(y))] = (float(d), float(z))
    return records, got


def convert(*args):
    return main(["data", "convert", *map(str, args)])


@pytest.fixture
def generic_set(tmp_path):
    """Two 8x6 images; image a: camera z = 2 m at pixels (2, 2) and (5, 4) only (0 = no measurement elsewhere)."""
    src = tmp_path / "src"
    src.mkdir()
    depth = np.zeros((H, W), np.float32)
    depth[2, 2] = depth[4, 5] = 2.0
    np.save(src / "a.npy", depth)
    Image.fromarray(rgb_image()).save(src / "a.png")
    np.save(src / "b.npy", np.full((H, W), 3.0, np.float32))
    Image.fromarray(rgb_image(seed=1)).save(src / "b.png")
    (src / "list.csv").write_text("image,depth\na.png,a.npy\nb.png,b.npy\n")
    return src


def test_generic_z_becomes_euclidean_by_hand(generic_set, tmp_path, capsys):
    out = tmp_path / "out" / "set.jsonl"
    assert convert("generic", generic_set / "list.csv", "--out", out, "--depth-kind", "z", "--intrinsics", 4, 5, 3.5,
                   2.5, "--margin", 1, "--labels", 5, "--depth-maps", "--exclude", "b") == 0
    printed = capsys.readouterr().out
    assert "camera z" in printed and "'depth' = euclidean distance" in printed
    records, got = labels_of(out)
    assert len(records) == 1 and records[0].camera.as_list() == [4.0, 5.0, 3.5, 2.5, 8, 6]
    # depth = z * sqrt(((x - cx) / fx)^2 + ((y - cy) / fy)^2 + 1)
    assert got[(2, 2)][0] == pytest.approx(2.1453437952924936, abs=1e-6)  # 2 * sqrt(0.375^2 + 0.1^2 + 1)
    assert got[(5, 4)][0] == pytest.approx(2.218670773233379, abs=1e-6)  # 2 * sqrt(0.375^2 + 0.3^2 + 1)
    assert got[(2, 2)][1] == got[(5, 4)][1] == 2.0  # axis_depth keeps z
    assert len(got) == 2
    # the image is copied as is; the depth map (euclidean, NaN = no measurement) is what pointcloud reads
    assert np.array_equal(np.asarray(Image.open(records[0].image)), rgb_image())
    from rlkit.pointcloud import load_depth_map
    dm = load_depth_map(records[0].extras["depth_map"], records[0].camera, "test")
    assert dm[4, 5] == pytest.approx(2.218670773233379, abs=1e-6) and np.isnan(dm[0, 0])
    side = json.loads((out.parent / "set.convert.json").read_text())
    assert side["depth_kind_read"] == "z" and "converted from the camera z" in side["written"]["depth"]
    assert side["images"]["excluded"] == 1 and side["images"]["fewer_labels"] == 1 and side["labels"] == 2
    assert "--depth-kind z" in side["command"] and "--exclude b" in side["command"]


def test_generic_euclidean_millimetre_png(tmp_path):
    """Input already euclidean: depth is kept, axis_depth = depth / ray length; --scale 0.001 reads millimetres."""
    src = tmp_path / "src"
    src.mkdir()
    mm = np.zeros((H, W), np.uint16)
    mm[4, 5] = 2000
    Image.fromarray(mm).save(src / "d.png")
    Image.fromarray(rgb_image()).save(src / "i.jpg")
    (src / "m.csv").write_text("image,depth,fx,fy,cx,cy,scene\ni.jpg,d.png,4,5,3.5,2.5,room1\n")
    out = tmp_path / "e.jsonl"
    assert convert("generic", src / "m.csv", "--out", out, "--depth-kind", "euclidean", "--scale", 0.001,
                   "--margin", 1) == 0
    records, got = labels_of(out)
    assert got == {(5, 4): (2.0, pytest.approx(1.8028812784019332, abs=1e-6))}  # 2 / sqrt(0.375^2 + 0.3^2 + 1)
    assert records[0].image.suffix == ".jpg" and records[0].extras["scene"] == "room1"
    assert json.loads((tmp_path / "e.convert.json").read_text())["depth_kind_read"] == "euclidean"


def test_generic_needs_the_depth_kind_stated(generic_set, tmp_path, capsys):
    out = tmp_path / "x.jsonl"
    assert convert("generic", generic_set / "list.csv", "--out", out, "--intrinsics", 4, 5, 3.5, 2.5) == 2
    assert "--depth-kind z" in capsys.readouterr().err
    assert not out.exists()


def test_invalid_pixels_are_never_sampled(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    w, h = 12, 10
    depth = np.full((h, w), 2.0, np.float32)  # the 1-pixel border: valid depth, but inside the margin
    inner = depth[1:-1, 1:-1]
    inner[:] = 0.0  # no measurement
    inner[0, :4] = [np.nan, np.inf, -1.0, 65535.0]  # not finite, negative, saturated
    inner[1, :2] = [50.0, 0.0005]  # above --max-depth, below the default 1 mm
    inner[5, 6] = 4.0  # the one pixel to label: (7, 6)
    np.save(src / "d.npy", depth)
    Image.fromarray(rgb_image(w, h)).save(src / "i.png")
    (src / "m.csv").write_text("image,depth\ni.png,d.npy\n")
    out = tmp_path / "v.jsonl"
    assert convert("generic", src / "m.csv", "--out", out, "--depth-kind", "z", "--intrinsics", 10, 10, 5.5, 4.5,
                   "--margin", 1, "--labels", 20, "--invalid-value", 65535, "--max-depth", 20) == 0
    _, got = labels_of(out)
    assert list(got) == [(7, 6)]
    px = json.loads((tmp_path / "v.convert.json").read_text())["pixels"]
    assert px == {"valid": 1, "not_finite": 2, "invalid_value": 1, "nonpositive": 10 * 8 - 6,
                  "below_min_depth": 1, "above_max_depth": 1, "masked": 0, "margin": 2 * w + 2 * h - 4}


def test_margin_seed_and_order(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        np.save(src / f"{name}.npy", np.full((30, 40), 5.0, np.float32))
        Image.fromarray(rgb_image(40, 30)).save(src / f"{name}.png")
    (src / "m.csv").write_text("image,depth\na.png,a.npy\nb.png,b.npy\n")
    common = ["--depth-kind", "z", "--intrinsics", 30, 30, 19.5, 14.5, "--margin", 7, "--labels", 60]

    def coords(out, *extra):
        assert convert("generic", src / "m.csv", "--out", out, *common, *extra) == 0
        return {rec.image.name: rec.pixels.tolist() for rec in load_records(out)[0]}

    first = coords(tmp_path / "1.jsonl")
    for pixels in first.values():
        xs, ys = np.array(pixels).T
        assert xs.min() >= 7 and xs.max() <= 40 - 1 - 7 and ys.min() >= 7 and ys.max() <= 30 - 1 - 7
        assert len({tuple(p) for p in pixels}) == 60  # without replacement
    assert coords(tmp_path / "1.jsonl", "--overwrite") == first  # same seed: same labels
    # (another output in the same folder needs its own --images-dir: it never replaces 1.jsonl's images)
    assert coords(tmp_path / "2.jsonl", "--exclude", "a", "--images-dir", "rgb2")["b.png"] == first["b.png"]
    assert coords(tmp_path / "3.jsonl", "--seed", 1, "--images-dir", "rgb3")["a.png"] != first["a.png"]
    assert first["a.png"] != first["b.png"]  # each image its own draw


def test_nothing_is_written_on_failure(generic_set, tmp_path, capsys):
    np.save(generic_set / "b.npy", np.ones((H + 1, W), np.float32))  # the second image's depth is the wrong size
    out = tmp_path / "out" / "f.jsonl"
    args = ["generic", generic_set / "list.csv", "--out", out, "--depth-kind", "z", "--intrinsics", 4, 5, 3.5, 2.5,
            "--margin", 1]
    assert convert(*args) == 2
    err = capsys.readouterr().err
    assert "b.npy" in err and "8x7" in err and "8x6" in err
    assert sorted(p.name for p in out.parent.iterdir()) == []  # no jsonl, sidecar, image or staging folder
    np.save(generic_set / "b.npy", np.full((H, W), 3.0, np.float32))
    assert convert(*args) == 0
    assert convert(*args) == 2 and "--overwrite" in capsys.readouterr().err  # never over an existing jsonl


def test_an_image_without_a_valid_pixel_is_a_counted_skip(generic_set, tmp_path, capsys):
    np.save(generic_set / "b.npy", np.zeros((H, W), np.float32))
    out = tmp_path / "s.jsonl"
    assert convert("generic", generic_set / "list.csv", "--out", out, "--depth-kind", "z", "--intrinsics", 4, 5,
                   3.5, 2.5, "--margin", 1) == 0
    assert "no_valid_pixel 1" in capsys.readouterr().out
    assert len(load_records(out)[0]) == 1
    assert json.loads((tmp_path / "s.convert.json").read_text())["images"]["skipped"] == {"no_valid_pixel": 1}



@pytest.fixture
def two_images(tmp_path):
    """good.png and other.png, 60x40, depth 2 m of camera z everywhere; m.csv lists good.png, m2.csv both."""
    src = tmp_path / "src"
    src.mkdir()
    for seed, name in enumerate(("good", "other")):
        Image.fromarray(rgb_image(60, 40, seed)).save(src / f"{name}.png")
    np.save(src / "d.npy", np.full((40, 60), 2.0, np.float32))
    (src / "m.csv").write_text("image,depth\ngood.png,d.npy\n")
    (src / "m2.csv").write_text("image,depth\ngood.png,d.npy\nother.png,d.npy\n")
    return src


CAMERA = ["--depth-kind", "z", "--intrinsics", 50, 50, 30, 20, "--margin", 1]


def error_line(err):
    """The one line the command line reports a bad input with (stderr also holds the progress bar)."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


def test_a_conversion_never_replaces_another_outputs_images(two_images, tmp_path, capsys):
    out = tmp_path / "out"
    assert convert("generic", two_images / "m.csv", "--out", out / "a.jsonl", *CAMERA) == 0
    capsys.readouterr()
    for extra in ([], ["--overwrite"]):  # --overwrite replaces b.jsonl's own files only, and rgb/good.png is a.jsonl's
        assert convert("generic", two_images / "m.csv", "--out", out / "b.jsonl", *CAMERA, "--crop", 0, 0, 30, 20,
                       *extra) == 2
        err = error_line(capsys.readouterr().err)
        assert f"{out / 'rgb' / 'good.png'} already exists" in err and "--images-dir" in err
    assert Image.open(out / "rgb" / "good.png").size == (60, 40)  # still what a.jsonl says
    assert sorted(p.name for p in out.iterdir()) == ["a.convert.json", "a.jsonl", "rgb"]
    labels_of(out / "a.jsonl")
    assert convert("generic", two_images / "m.csv", "--out", out / "b.jsonl", *CAMERA, "--crop", 0, 0, 30, 20,
                   "--images-dir", "rgb_crop") == 0
    assert labels_of(out / "b.jsonl")[0][0].camera.as_list() == [50.0, 50.0, 30.0, 20.0, 30, 20]
    assert json.loads((out / "b.convert.json").read_text())["files"] == ["rgb_crop/good.png"]


def test_overwrite_replaces_the_old_output_whole_and_the_jsonl_last(two_images, tmp_path, monkeypatch):
    out = tmp_path / "a.jsonl"
    assert convert("generic", two_images / "m2.csv", "--out", out, *CAMERA, "--depth-maps") == 0
    assert json.loads((tmp_path / "a.convert.json").read_text())["files"] == [
        "rgb/good.png", "rgb/good.depth.npz", "rgb/other.png", "rgb/other.depth.npz"]
    # the new jsonl cannot be written: the old one must be gone already, not left pointing at the new cropped images
    import rlkit.convert.core as core
    real = core.atomic_write_text

    def fail_on_jsonl(path, text):
        if str(path).endswith(".jsonl"):
            raise OSError(28, "No space left on device")
        real(path, text)

    monkeypatch.setattr(core, "atomic_write_text", fail_on_jsonl)
    with pytest.raises(OSError):
        convert("generic", two_images / "m.csv", "--out", out, *CAMERA, "--crop", 0, 0, 30, 20, "--overwrite")
    assert not out.exists()
    monkeypatch.undo()
    # a rerun replaces what that run left (its .convert.json lists it); other.png and the depth maps, which the new
    # output does not write, are gone
    assert convert("generic", two_images / "m.csv", "--out", out, *CAMERA, "--crop", 0, 0, 30, 20, "--overwrite") == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file() and "src" not in p.parts) \
        == ["a.convert.json", "a.jsonl", "rgb/good.png"]
    assert labels_of(out)[0][0].camera.width == 30 and Image.open(tmp_path / "rgb" / "good.png").size == (30, 20)


@pytest.mark.parametrize("crop", [[], ["--crop", 0, 0, 30, 20]], ids=["copy", "crop"])
def test_a_truncated_image_is_a_one_line_error(two_images, tmp_path, capsys, crop):
    data = (two_images / "good.png").read_bytes()
    (two_images / "good.png").write_bytes(data[:len(data) // 2])  # the header reads, the pixels do not
    out = tmp_path / "out" / "t.jsonl"
    assert convert("generic", two_images / "m2.csv", "--out", out, *CAMERA, *crop) == 2
    err = error_line(capsys.readouterr().err)
    assert f"{two_images / 'good.png'} cannot be decoded" in err and "truncated" in err
    assert sorted(out.parent.iterdir()) == []

def test_kitti_16bit_png(tmp_path):
    """KITTI devkit: uint16 / 256 = meters of camera z, 0 = none. 5120 -> 20.0 m."""
    src = tmp_path / "depth_selection"
    for sub in ("image", "groundtruth_depth", "intrinsics"):
        (src / sub).mkdir(parents=True)
    name = "2011_09_26_drive_0002_sync_{}_0000000005_image_02"
    raw = np.zeros((H, W), np.uint16)
    raw[2, 3] = 5120  # at the principal point: euclidean = z
    raw[4, 5] = 2560  # 10 m of z
    Image.fromarray(raw).save(src / "groundtruth_depth" / (name.format("groundtruth_depth") + ".png"))
    Image.fromarray(rgb_image()).save(src / "image" / (name.format("image") + ".png"))
    (src / "intrinsics" / (name.format("image") + ".txt")).write_text("4 0 3 0 4 2 0 0 1\n")
    out = tmp_path / "k.jsonl"
    assert convert("kitti", src, "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    assert got[(3, 2)] == (20.0, 20.0)
    assert got[(5, 4)] == (pytest.approx(12.24744871391589, abs=1e-5), 10.0)  # 10 * sqrt(0.5^2 + 0.5^2 + 1)
    assert records[0].extras["scene"] == "2011_09_26_drive_0002"
    # the same data through a manifest (DDAD exports): the camera from --intrinsics
    (src / "m.csv").write_text(f"image,depth\nimage/{name.format('image')}.png,"
                               f"groundtruth_depth/{name.format('groundtruth_depth')}.png\n")
    assert convert("kitti", src / "m.csv", "--out", tmp_path / "k2.jsonl", "--margin", 1, "--intrinsics", 4, 4, 3,
                   2) == 0
    assert labels_of(tmp_path / "k2.jsonl")[1] == got


def test_kitti_refuses_what_the_format_fixes(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("image,depth\n")
    assert convert("kitti", tmp_path / "m.csv", "--out", tmp_path / "o.jsonl", "--depth-kind", "euclidean") == 2
    assert "--depth-kind does not apply" in capsys.readouterr().err


@pytest.fixture
def nyu_mat(tmp_path):
    """nyu_depth_v2_labeled.mat as MATLAB v7.3 stores it: HDF5, arrays transposed (N, 3, W, H) and (N, W, H)."""
    h5py = pytest.importorskip("h5py")
    images = np.zeros((2, 3, 640, 480), np.uint8)
    depths = np.zeros((2, 640, 480), np.float32)
    images[0, :, 100, 200] = (10, 20, 30)  # image 1, pixel x=100, y=200
    depths[0, 100, 200] = 2.0
    depths[0, 500, 400] = 3.0
    depths[1, 10, 10] = 1.5  # image 2: only in the white border the default crop removes
    path = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(path, "w") as f:
        f["images"], f["depths"] = images, depths
    return path


NYU_CX, NYU_CY = 3.2558244941119034e+02, 2.5373616633400465e+02  # NYU toolbox camera_params.m


def test_nyuv2(nyu_mat, tmp_path):
    out = tmp_path / "nyu" / "test.jsonl"
    assert convert("nyuv2", nyu_mat, "--out", out) == 0
    records, got = labels_of(out)
    assert len(records) == 1 and records[0].image.name == "00001.png"  # image 2 had no pixel inside the crop
    # the default crop (41, 45)-(602, 472): SUN RGB-D's NYUv2 frame, cx 284.582449, cy 208.736166
    assert records[0].camera.as_list() == pytest.approx([518.85790117450188, 519.46961112127485, NYU_CX - 41,
                                                         NYU_CY - 45, 561, 427])
    assert got == {(59, 155): (pytest.approx(2.1906376494866113, abs=1e-5), 2.0),  # original pixel (100, 200)
                   (459, 355): (pytest.approx(3.2757465342739316, abs=1e-5), 3.0)}  # original (500, 400)
    assert tuple(np.asarray(Image.open(records[0].image))[155, 59]) == (10, 20, 30)
    # --no-crop: the whole 640x480 frame; --split-file splits.mat --split test: MATLAB's 1-based testNdxs
    from scipy.io import savemat
    savemat(tmp_path / "splits.mat", {"trainNdxs": np.array([[1]]), "testNdxs": np.array([[2]])})
    out2 = tmp_path / "nyu" / "t2.jsonl"
    assert convert("nyuv2", nyu_mat, "--out", out2, "--no-crop", "--split-file", tmp_path / "splits.mat",
                   "--split", "test", "--margin", 5) == 0
    records, got = labels_of(out2)
    assert records[0].image.name == "00002.png" and records[0].camera.width == 640
    assert got == {(10, 10): (pytest.approx(1.8914805998905126, abs=1e-5), 1.5)}


def test_ibims1_mat(tmp_path):
    """iBims-1: per-image v5 .mat, struct data with rgb, depth (z), calib (MATLAB's transposed K), masks."""
    savemat = pytest.importorskip("scipy.io").savemat
    depth = np.zeros((H, W))
    depth[2, 2] = depth[4, 5] = depth[3, 3] = depth[3, 4] = 2.0
    mask_invalid, mask_transp = np.ones((H, W), np.uint8), np.ones((H, W), np.uint8)
    mask_invalid[3, 3] = 0  # invalid
    mask_transp[3, 4] = 0  # transparent
    calib = np.array([[4.0, 0, 0], [0, 5.0, 0], [3.5, 2.5, 1]])  # fx 4, fy 5, cx 3.5, cy 2.5
    folder = tmp_path / "ibims1_core_mat"
    folder.mkdir()
    savemat(folder / "corridor_01.mat", {"data": {"rgb": rgb_image(), "depth": depth, "calib": calib,
                                                  "mask_invalid": mask_invalid, "mask_transp": mask_transp,
                                                  "edges": np.zeros((H, W), np.uint8)}})
    out = tmp_path / "ibims1.jsonl"
    assert convert("ibims1", folder, "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    assert records[0].camera.as_list() == [4.0, 5.0, 3.5, 2.5, 8, 6]
    assert got == {(2, 2): (pytest.approx(2.1453437952924936, abs=1e-6), 2.0),  # 2 * sqrt(0.375^2 + 0.1^2 + 1)
                   (5, 4): (pytest.approx(2.218670773233379, abs=1e-6), 2.0)}  # 2 * sqrt(0.375^2 + 0.3^2 + 1)
    assert np.array_equal(np.asarray(Image.open(records[0].image)), rgb_image())


def test_sunrgbd_bit_rotation():
    # SUNRGBDtoolbox read3dPoints.m: bitor(bitshift(d, -3), bitshift(d, 13)) millimetres
    raw = np.array([16000, 16001, 24000, 0], np.uint16)  # 16001 = 16000 | 0b001: the low bit lands at 2^13
    assert sunrgbd_decode(raw).tolist() == [2000, 2000 + 8192, 3000, 0]


def test_sunrgbd_frame_folder(tmp_path):
    frame = tmp_path / "SUNRGBD" / "kv2" / "kinect2data" / "000001"
    (frame / "image").mkdir(parents=True)
    (frame / "depth").mkdir()
    Image.fromarray(rgb_image()).save(frame / "image" / "0000001.jpg")
    raw = np.zeros((H, W), np.uint16)
    raw[2, 3] = 16000  # 2.000 m at the principal point
    raw[3, 2] = 24000  # 3.000 m
    raw[4, 5] = 16001  # 10.192 m: beyond the 8 m the toolbox clamps at, dropped
    Image.fromarray(raw).save(frame / "depth" / "0000001.png")
    (frame / "intrinsics.txt").write_text("4 0 3\n0 4 2\n0 0 1\n")
    out = tmp_path / "sun.jsonl"
    assert convert("sunrgbd", tmp_path / "SUNRGBD", "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    assert got == {(3, 2): (2.0, 2.0), (2, 3): (pytest.approx(3.181980515339464, abs=1e-6), 3.0)}  # 3 * sqrt(1.125)
    assert records[0].image.name == "000001.jpg" and records[0].extras["scene"] == "kv2/kinect2data/000001"


def test_colmap_thin_prism_fisheye_by_hand():
    # no distortion terms: the equidistant fisheye alone, theta = atan(1) = pi / 4 for the ray (1, 0, 1)
    params = [100, 100, 50, 40] + [0] * 8
    px, py = colmap_project("THIN_PRISM_FISHEYE", params, np.array([1.0, 0.0]), np.array([0.0, 0.0]))
    assert px.tolist() == pytest.approx([128.53981633974485, 50.0]) and py.tolist() == [40.0, 40.0]
    # k1 = 0.1 at theta^2 = 0.25 (ray (0.5463, 0) has theta = 0.5): u = 0.5 * (1 + 0.1 * 0.25) = 0.5125
    px, _ = colmap_project("THIN_PRISM_FISHEYE", [100, 100, 50, 40, 0.1] + [0] * 7, np.array([np.tan(0.5)]),
                           np.array([0.0]))
    assert px[0] == pytest.approx(100 * 0.5125 + 50)


def write_eth3d_scene(root, model_line, depth):
    scene = root / "courtyard"
    for sub in ("images/dslr_images", "ground_truth_depth/dslr_images", "dslr_calibration_jpg"):
        (scene / sub).mkdir(parents=True)
    (scene / "dslr_calibration_jpg" / "cameras.txt").write_text(f"# Camera list\n{model_line}\n")
    (scene / "dslr_calibration_jpg" / "images.txt").write_text(
        "# Image list\n1 1 0 0 0 0 0 0 1 dslr_images/DSC_0001.JPG\n\n")
    Image.fromarray(rgb_image()).save(scene / "images/dslr_images/DSC_0001.JPG", quality=95)
    depth.astype("<f4").tofile(scene / "ground_truth_depth/dslr_images/DSC_0001.JPG")  # raw float32, as ETH3D


def test_eth3d_pinhole(tmp_path):
    depth = np.full((H, W), np.inf, np.float32)  # inf: no ground truth
    depth[2, 3] = depth[4, 5] = 2.0
    write_eth3d_scene(tmp_path, "1 PINHOLE 8 6 4 4 4 3", depth)  # COLMAP cx 4, cy 3 = pixel centers 3.5, 2.5
    out = tmp_path / "eth3d.jsonl"
    assert convert("eth3d", tmp_path, "--out", out, "--margin", 1) == 0
    records, got = labels_of(out)
    assert records[0].camera.as_list() == [4.0, 4.0, 3.5, 2.5, 8, 6]
    assert got == {(3, 2): (pytest.approx(2.03100960115899, abs=1e-6), 2.0),  # 2 * sqrt(0.125^2 + 0.125^2 + 1)
                   (5, 4): (pytest.approx(2.2638462845343543, abs=1e-6), 2.0)}  # 2 * sqrt(0.375^2 + 0.375^2 + 1)
    assert records[0].image.name == "DSC_0001.png" and records[0].extras["scene"] == "courtyard"


def test_eth3d_fisheye_is_undistorted_and_scaled(tmp_path):
    """THIN_PRISM_FISHEYE, 16x12 -> 8x6 (--height 6): z = 2 everywhere stays z, the depth follows the output camera."""
    depth = np.full((12, 16), 2.0, np.float32)
    write_eth3d_scene(tmp_path, "1 THIN_PRISM_FISHEYE 16 12 10 10 8 6 0.01 0 0 0 0 0 0 0", depth)
    scene = tmp_path / "courtyard"
    Image.fromarray(rgb_image(16, 12)).save(scene / "images/dslr_images/DSC_0001.JPG", quality=95)
    out = tmp_path / "e.jsonl"
    assert convert("eth3d", tmp_path, "--out", out, "--margin", 0, "--height", 6, "--labels", 48) == 0
    records, got = labels_of(out)
    cam = records[0].camera
    assert cam.as_list() == [5.0, 5.0, 3.5, 2.5, 8, 6]  # focal lengths and COLMAP's (8, 6) halved, minus 0.5
    assert len(got) == 48
    for (x, y), (d, z) in got.items():
        assert z == 2.0 and d == pytest.approx(2 * np.sqrt(((x - 3.5) / 5) ** 2 + ((y - 2.5) / 5) ** 2 + 1), abs=1e-5)


def test_eth3d_depth_size_must_match_the_image(tmp_path, capsys):
    write_eth3d_scene(tmp_path, "1 PINHOLE 8 6 4 4 4 3", np.ones((H, W - 1), np.float32))
    assert convert("eth3d", tmp_path, "--out", tmp_path / "x.jsonl") == 2
    assert "DSC_0001.JPG: 42 float32 values" in capsys.readouterr().err
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_manifests_fail_before_anything_is_written(generic_set, tmp_path, capsys):
    out = tmp_path / "o" / "m.jsonl"
    (generic_set / "bad.csv").write_text("image,depth\na.png,a.npy\nc.png,a.npy\n")
    assert convert("generic", generic_set / "bad.csv", "--out", out, "--depth-kind", "z", "--intrinsics", 4, 4, 4,
                   3) == 2
    assert f"{generic_set / 'bad.csv'}:3: field 'image': file not found" in capsys.readouterr().err
    (generic_set / "bad.csv").write_text("image,depth,fx\na.png,a.npy,4\n")
    assert convert("generic", generic_set / "bad.csv", "--out", out, "--depth-kind", "z") == 2
    assert "give all of fx, fy, cx, cy or none" in capsys.readouterr().err
    assert not out.parent.exists()
    # an output image that would land on its own source is refused (the copy would replace it)
    assert convert("generic", generic_set / "list.csv", "--out", generic_set / "x.jsonl", "--images-dir", "a",
                   "--depth-kind", "z", "--intrinsics", 4, 4, 4, 3, "--margin", 1) == 0  # a/a.png: fine
    (generic_set / "rgb").mkdir()
    Image.fromarray(rgb_image()).save(generic_set / "rgb" / "a.png")
    (generic_set / "named.csv").write_text("image,depth,name\nrgb/a.png,a.npy,a\n")
    assert convert("generic", generic_set / "named.csv", "--out", generic_set / "y.jsonl", "--depth-kind", "z",
                   "--intrinsics", 4, 4, 4, 3, "--margin", 1) == 2
    assert "would replace the source image" in capsys.readouterr().err
    assert np.array_equal(np.asarray(Image.open(generic_set / "rgb" / "a.png")), rgb_image())


def test_hostile_outputs_and_depth_files_are_one_line_errors(generic_set, tmp_path, capsys):
    base = ["generic", generic_set / "list.csv", "--depth-kind", "z", "--intrinsics", 4, 5, 3.5, 2.5, "--margin", 1]
    (tmp_path / "a_file").write_text("x")
    assert convert(*base, "--out", tmp_path / "a_file" / "f.jsonl") == 2
    assert "a_file is a file, not a folder" in capsys.readouterr().err
    assert convert(*base, "--out", tmp_path / ("n" * 250 + ".jsonl")) == 2
    assert "the file name is too long" in capsys.readouterr().err
    (generic_set / "b.npz").write_bytes(b"PK\x03\x04 not a zip archive")  # a corrupt .npz
    (generic_set / "list.csv").write_text("image,depth\na.png,a.npy\nb.png,b.npz\n")
    assert convert(*base, "--out", tmp_path / "o" / "f.jsonl") == 2
    err = capsys.readouterr().err
    assert "b.npz cannot be read as a depth map (BadZipFile" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "f.jsonl").exists()


def test_a_second_convert_into_one_folder_waits_for_the_first(generic_set, tmp_path, caplog):
    import fcntl
    import os
    import threading
    import time

    caplog.set_level("INFO")
    out = tmp_path / "out" / "f.jsonl"
    out.parent.mkdir()
    from rlkit.convert.core import _lock_file

    held = os.open(_lock_file(out.parent), os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another convert is writing into the folder
    threading.Timer(1.0, os.close, [held]).start()
    start = time.monotonic()
    assert convert("generic", generic_set / "list.csv", "--depth-kind", "z", "--intrinsics", 4, 5, 3.5, 2.5,
                   "--margin", 1, "--out", out) == 0
    assert time.monotonic() - start >= 0.9 and "waiting for it to finish" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == ["f.convert.json", "f.jsonl", "rgb"]


@pytest.mark.parametrize("line, needle", [
    ("1 PINHOLE 8 0 4 4 4 3", "camera 1 is 8x0; width and height must be at least 1"),
    ("1 PINHOLE 0 6 4 4 4 3", "camera 1 is 0x6"),
    ("1 PINHOLE 8 6 0 4 4 3", "focal length positive"),
    ("1 SIMPLE_PINHOLE 8 6 nan 4 3", "must be finite"),
])
def test_eth3d_a_camera_without_size_or_focal_is_one_line_naming_file_and_line(tmp_path, capsys, line, needle):
    write_eth3d_scene(tmp_path, line, np.ones((H, W), np.float32))
    assert convert("eth3d", tmp_path, "--out", tmp_path / "x.jsonl") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and err[0].startswith("error: ") and "cameras.txt:2: " in err[0] and needle in err[0], err
    assert not (tmp_path / "x.jsonl").exists()


def test_an_intrinsics_path_that_is_a_folder_is_one_line_naming_file_line_and_field(generic_set, tmp_path, capsys):
    (generic_set / "kdir").mkdir()
    (generic_set / "k.csv").write_text("image,depth,intrinsics\na.png,a.npy,kdir\n")
    assert convert("generic", generic_set / "k.csv", "--depth-kind", "z", "--out", tmp_path / "x.jsonl") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "k.csv:2: field 'intrinsics'" in err[0] and "kdir" in err[0] and \
        "IsADirectoryError" in err[0], err


def test_an_output_name_too_long_for_a_file_is_one_line_naming_the_manifest_line(generic_set, tmp_path, capsys):
    (generic_set / "named.csv").write_text("image,depth,name\na.png,a.npy," + "n" * 300 + "\n")
    assert convert("generic", generic_set / "named.csv", "--depth-kind", "z", "--intrinsics", 4, 5, 3.5, 2.5,
                   "--out", tmp_path / "o" / "x.jsonl") == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 1 and "named.csv:2: field 'name'" in err[0] and "longer than 200 bytes" in err[0], err
    assert not (tmp_path / "o" / "x.jsonl").exists()
