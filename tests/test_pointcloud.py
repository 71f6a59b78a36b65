import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from plyfile import PlyData

from rlkit import pointcloud as pc
from rlkit.schema import CameraOptions, PromptOptions
from rlkit.camera import Camera
from rlkit.config import ConfigError, load_experiment
from rlkit.markers import MarkerStyle
from rlkit.records import RecordError, load_records

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "experiments/sft_synthetic.yaml"


def oracle(samples):
    """Answers the label, which the grid record holds as the true distance: full precision, in meters."""
    return [f"The point is around {s.query.value!r} meters away from the camera." for s in samples]


def default_options():
    exp = load_experiment(DEFAULT)  # the embedded default's camera and prompt (f_uni 50, 9-px outlined square)
    return exp.camera, exp.prompt


def read_points(path):
    """points.csv as written: empty cells are missing values (pandas reads floats back to the bit)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def ply_vertices(path):
    v = PlyData.read(str(path))["vertex"].data
    return np.stack([v["x"], v["y"], v["z"]], 1), np.stack([v["red"], v["green"], v["blue"]], 1)


def test_back_projection_by_hand():
    cam = Camera(100.0, 200.0, 50.0, 50.0, 200, 300)
    # pixel (150, 50): ray (1, 0, 1) / sqrt 2; pixel (50, 250): ray (0, 1, 1) / sqrt 2 (fy = 200)
    pixels = np.array([[150, 50], [50, 250]])
    np.testing.assert_allclose(pc.back_project(cam, pixels, [2 * math.sqrt(2), 3 * math.sqrt(2)]),
                               [[2, 0, 2], [0, 3, 3]], atol=1e-12)
    # a principal-axis distance is z itself
    np.testing.assert_allclose(pc.back_project(cam, pixels, [2, 3], "axis_depth"), [[2, 0, 2], [0, 3, 3]], atol=1e-12)
    assert np.isnan(pc.back_project(cam, pixels[:1], [np.nan])).all()


def test_grid_by_hand():
    pixels, shape = pc.grid_pixels(4, 2, 2)  # 2 x 1 cells of 2 x 2 pixels; centers (1.5, 1) -> pixel (1, 1)
    assert shape == (2, 1) and pixels.tolist() == [[1, 1], [3, 1]]
    pixels, shape = pc.grid_pixels(303, 211, 400)  # the aspect kept: 24 x 17
    assert shape == (24, 17) and len(pixels) == 408 and pixels.min() >= 0
    assert pixels[:, 0].max() < 303 and pixels[:, 1].max() < 211
    assert pc.grid_pixels(5, 3, 10_000)[1] == (5, 3)  # never more than every pixel


def test_synth_depth_maps_match_the_labels(synth_dir):
    for family in ("indoor", "outdoor"):
        first = json.loads((synth_dir / f"{family}_eval.jsonl").read_text().splitlines()[0])
        assert list(first) == ["image", "intrinsics", "pixel_coords", "depth", "axis_depth", "scene", "depth_map"]
        recs, _ = load_records(synth_dir / f"{family}_eval.jsonl")
        for r in recs:
            depth = pc.load_depth_map(r.extras["depth_map"], r.camera, r.source)
            x, y = r.pixels.astype(int).T
            np.testing.assert_allclose(depth[y, x], r.depth, atol=1e-4)  # labels: 4 decimals of the same depth
            assert r.extras["depth_map"].name == r.image.name.replace(".png", ".depth.npz")
            if family == "indoor":
                assert np.isfinite(depth).all()  # a closed room
            else:
                assert np.isnan(depth).any()  # sky


def test_oracle_reproduces_the_ground_truth_cloud_and_the_ply_is_the_csv(synth_dir, tmp_path):
    rec = pc.load_record_line(f"{synth_dir}/indoor_eval.jsonl:2")
    depth = pc.load_depth_map(rec.extras["depth_map"], rec.camera, rec.source)
    cam_opts, prompt_opts = default_options()
    summary = pc.point_cloud(rec, cam_opts, prompt_opts, oracle, tmp_path, points=300, batch_size=16,
                             depth_map=depth, progress=False)
    c = summary["counts"]
    assert c["answered"] == c["queried"] > 100 and c["unparsable"] == 0
    assert c["grid"] == c["queried"] + sum(c["skipped"].values())

    pred, gt = PlyData.read(str(tmp_path / "points.ply")), PlyData.read(str(tmp_path / "gt.ply"))
    assert pred["vertex"].count == c["answered"]
    assert np.array_equal(pred["vertex"].data, gt["vertex"].data)  # the same points, bit for bit
    assert summary["ground_truth"]["abs_err_m"]["max"] == 0 and summary["ground_truth"]["metrics"]["delta1"] == 1

    frame = read_points(tmp_path / "points.csv")
    assert len(frame) == c["grid"]
    answered = frame[frame["value"].notna()]
    xyz, rgb = ply_vertices(tmp_path / "points.ply")
    expected = pc.back_project(rec.camera, answered[["x", "y"]].to_numpy(), answered["value"].to_numpy())
    assert np.array_equal(xyz, expected.astype(np.float32))
    np.testing.assert_allclose(answered[["X", "Y", "Z"]].to_numpy(), expected, rtol=1e-15)
    assert np.array_equal(rgb, answered[["r", "g", "b"]].to_numpy())
    image = np.asarray(Image.open(rec.image))
    assert np.array_equal(rgb, image[answered["y"], answered["x"]])
    # the true distance at each pixel, read from the depth map
    np.testing.assert_array_equal(answered["gt"], depth[answered["y"], answered["x"]])
    assert (tmp_path / "views.png").stat().st_size > 0


def test_the_label_never_reaches_the_model(synth_dir, tmp_path):
    rec = pc.load_record_line(f"{synth_dir}/indoor_eval.jsonl:1")
    depth = pc.load_depth_map(rec.extras["depth_map"], rec.camera, rec.source)
    cam_opts, prompt_opts = default_options()
    runs = []

    def model(samples):
        runs[-1] += [(s.question, s.image.tobytes()) for s in samples]
        return ["3 meters"] * len(samples)

    for gt in (depth, depth * 2, None):  # the truth, another truth, no truth (placeholder labels)
        runs.append([])
        pc.point_cloud(rec, cam_opts, prompt_opts, model, tmp_path / "o", points=60, batch_size=8, depth_map=gt,
                       progress=False)
    assert len(runs[0]) > 8 and runs[0] == runs[1] == runs[2]


def test_a_prompt_that_shows_the_label_is_refused(synth_dir, tmp_path, monkeypatch):
    import rlkit.builder

    rec = pc.load_record_line(f"{synth_dir}/indoor_eval.jsonl:1")
    monkeypatch.setattr(rlkit.builder.samples, "question", lambda q, **kw: f"Is it {q.value} meters?")
    with pytest.raises(ConfigError, match="shows the label"):
        pc.point_cloud(rec, *default_options(), oracle, tmp_path, points=20, progress=False)


def test_border_pixels_are_skipped_and_counted(tmp_path):
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(tmp_path / "flat.png")
    rec = pc.image_record(str(tmp_path / "flat.png"), [40.0, 40.0, 19.5, 14.5])
    # no resize; the 9-px square with its outline reaches 5 px on each side: x in 5..34, y in 5..24 drawable
    cam_opts = CameraOptions(strategy="direct")
    prompt_opts = PromptOptions(marker=MarkerStyle("square", 9, outline=(255, 255, 255)))

    def model(samples):  # a number for even x, none for odd x
        return ["4 meters" if s.query.x % 2 == 0 else "far away" for s in samples]

    summary = pc.point_cloud(rec, cam_opts, prompt_opts, model, tmp_path / "out", points=1200, progress=False)
    assert summary["grid"] == [40, 30]  # every pixel
    assert summary["counts"] == {"grid": 1200, "queried": 30 * 20, "skipped": {"marker_outside_image": 600},
                                 "unparsable": 300, "answered": 300}
    frame = read_points(tmp_path / "out/points.csv")
    inside = frame["x"].between(5, 34) & frame["y"].between(5, 24)
    assert (frame.loc[~inside, "skipped"] == "marker_outside_image").all()
    assert frame.loc[inside, "skipped"].isna().all() and frame.loc[~inside, "text"].isna().all()
    assert PlyData.read(str(tmp_path / "out/points.ply"))["vertex"].count == 300
    assert "ground_truth" not in summary and not (tmp_path / "out/gt.ply").exists()


def test_depth_map_formats(tmp_path):
    cam = Camera(10.0, 10.0, 1.0, 0.5, 3, 2)
    meters = np.array([[1.0, 2.5, np.inf], [0.0, 4.0, 65.535]])
    np.save(tmp_path / "d.npy", meters)
    Image.fromarray(np.array([[1000, 2500, 0], [0, 4000, 65535]], np.uint16)).save(tmp_path / "d.png")
    expected = np.array([[1.0, 2.5, np.nan], [np.nan, 4.0, 65.535]])
    for name in ("d.npy", "d.png"):
        np.testing.assert_array_equal(pc.load_depth_map(tmp_path / name, cam, "test"), expected)
    with pytest.raises(ValueError, match="field 'depth_map'.*shape"):
        pc.load_depth_map(tmp_path / "d.npy", Camera(10.0, 10.0, 1.0, 0.5, 2, 3), "test")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="not 16-bit"):
        pc.load_depth_map(tmp_path / "rgb.png", cam, "test")


def test_command_with_the_tiny_model(synth_dir, tmp_path, capsys):
    """The real path once: the tiny default checkpoint (rlkit.tiny, offline) answers a few pixels."""
    from rlkit.cli import main
    from rlkit.schema import ModelConfig
    from rlkit.models import ensure_model_path

    model = ensure_model_path(ModelConfig(cache_dir=str(ROOT / ".cache/models")))
    out = tmp_path / "cloud"
    assert main(["pointcloud", str(DEFAULT), "eval.batch_size=4", "eval.max_new_tokens=16", "--model", model,
                 "--record", f"{synth_dir}/indoor_eval.jsonl:1", "--points", "12", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["queried"] > 0 and c["queried"] + sum(c["skipped"].values()) == c["grid"]
    assert PlyData.read(str(out / "points.ply"))["vertex"].count == c["answered"]
    assert PlyData.read(str(out / "gt.ply"))["vertex"].count == c["queried"]  # the record's depth map
    frame = read_points(out / "points.csv")
    assert len(frame) == c["grid"] and frame.loc[frame["skipped"].isna(), "text"].notna().all()
    assert "ground truth" in capsys.readouterr().out
    # a line that does not exist: one line, exit code 2
    assert main(["pointcloud", str(DEFAULT), "--model", model, "--record", f"{synth_dir}/indoor_eval.jsonl:99",
                 "--out", str(out)]) == 2


def test_a_record_line_is_read_alone_and_its_depth_map_stays_inside_the_root(tmp_path, synth_dir):
    import json

    lines = (synth_dir / "indoor_eval.jsonl").read_text().splitlines()
    path = synth_dir / "mixed.jsonl"  # beside the images, which the lines name relative to it
    first = json.loads(lines[0])
    # line 2 is broken JSON: reading line 1 never parses it; line 3 names a depth map outside the root
    outside = {**first, "depth_map": "../../etc/passwd"}
    path.write_text("\n".join([json.dumps(first), "{broken", json.dumps(outside)]) + "\n")
    rec = pc.load_record_line(f"{path}:1")
    assert rec.source == f"{path}:1" and len(rec.depth) == len(first["depth"])
    with pytest.raises(RecordError, match=r"mixed.jsonl:3: field 'depth_map': .* is outside the dataset root"):
        pc.load_record_line(f"{path}:3")
    with pytest.raises(ConfigError, match=r"line 9 does not exist \(.* has 3 lines\)"):
        pc.load_record_line(f"{path}:9")


def test_bad_inputs_are_one_line_errors_before_the_model_loads(synth_dir, tmp_path, capsys, monkeypatch):
    """A non-image, a corrupt depth map, an --out that is a file (or under one) and a missing model folder:
    exit 2 with one line naming the file, and the model is never loaded (nor any pixel asked)."""
    from rlkit.cli import main

    monkeypatch.setattr(pc, "model_answers", lambda *a, **k: pytest.fail("the model was loaded"))
    (tmp_path / "not.png").write_text("not an image\n")
    good = synth_dir / "rgb/indoor_eval/000000.depth.npz"
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:100])
    np.save(tmp_path / "pickled.npy", np.array([{"depth": 1.0}], dtype=object))  # object arrays need pickle
    (tmp_path / "afile").write_text("x")
    line = f"{synth_dir}/indoor_eval.jsonl:1"
    cases = [
        (["--image", tmp_path / "not.png", "--intrinsics", 60, 60, 30, 20], "--image", "not.png"),
        (["--record", line, "--depth-map", tmp_path / "cut.npz"], "--depth-map", "cut.npz cannot be read"),
        (["--record", line, "--depth-map", tmp_path / "pickled.npy"], "--depth-map", "pickled.npy cannot be read"),
        (["--record", line, "--depth-map", tmp_path / "not.png"], "--depth-map", "not.png cannot be read"),
        (["--record", line, "--out", tmp_path / "afile"], "--out", "not a folder"),
        (["--record", line, "--out", tmp_path / "afile" / "cloud"], "--out", "afile is a file"),
        (["--record", line, "--model", tmp_path / "no-model"], "--model", "folder not found"),
    ]
    for args, first, needle in cases:
        argv = ["pointcloud", str(DEFAULT), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "o"),
                *map(str, args)]
        assert main(argv) == 2, args
        err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert len(err) == 1 and err[0].startswith("error: ") and first in err[0] and needle in err[0], err
    assert not (tmp_path / "o").exists()

    # the record's own depth map, cut: named by the record's file:line
    lines = (synth_dir / "indoor_eval.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    (tmp_path / "rgb").symlink_to(synth_dir / "rgb")
    (tmp_path / "cutmap.jsonl").write_text(json.dumps({**rec, "depth_map": "cut.npz"}) + "\n")
    record = pc.load_record_line(f"{tmp_path}/cutmap.jsonl:1")
    with pytest.raises(RecordError, match=r"cutmap.jsonl:1: field 'depth_map': .*cut.npz cannot be read"):
        pc.load_depth_map(record.extras["depth_map"], record.camera, record.source)
